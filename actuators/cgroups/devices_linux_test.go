package cgroups

import (
	"testing"

	"vzd/spec"
)

func TestDeviceRuleFor(t *testing.T) {
	r, err := DeviceRuleFor(spec.Device{Path: "/dev/null", Access: "wr"})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.String(); s != "c 1:3 rw" {
		t.Errorf("/dev/null = %s, want c 1:3 rw", s)
	}
	if _, err := DeviceRuleFor(spec.Device{Path: "/etc/hostname"}); err == nil {
		t.Error("a regular file resolved to a device")
	}
	c := spec.Container{Devices: []spec.Device{{Path: "/dev/zero", Access: "r"}}}
	if got := FromSpec(&c, "").Devices; len(got) != 1 || got[0].String() != "c 1:5 r" {
		t.Errorf("FromSpec devices = %v", got)
	}
}
