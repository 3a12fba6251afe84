package cgroups

import (
	"reflect"
	"testing"

	"vzd/spec"
)

func TestFromSpec(t *testing.T) {
	tests := []struct {
		name string
		c    spec.Container
		dev  string
		want Resources
	}{
		{
			name: "nothing set",
			want: Resources{CPUPeriod: 100000},
		},
		{
			name: "cpu count",
			c:    spec.Container{CPU: spec.CPU{Count: 2}},
			want: Resources{CPUPeriod: 100000, CPUQuota: 200000},
		},
		{
			name: "cpu limit percent",
			c:    spec.Container{CPU: spec.CPU{Limit: 150}},
			want: Resources{CPUPeriod: 100000, CPUQuota: 150000},
		},
		{
			name: "count and limit: limit smaller",
			c:    spec.Container{CPU: spec.CPU{Count: 2, Limit: 50}},
			want: Resources{CPUPeriod: 100000, CPUQuota: 50000},
		},
		{
			name: "count and limit: count smaller",
			c:    spec.Container{CPU: spec.CPU{Count: 1, Limit: 300}},
			want: Resources{CPUPeriod: 100000, CPUQuota: 100000},
		},
		{
			name: "tiny limit raised to the kernel's 1 ms minimum",
			c:    spec.Container{CPU: spec.CPU{Limit: 0.1}},
			want: Resources{CPUPeriod: 100000, CPUQuota: 1000},
		},
		{
			name: "units and mask pass through",
			c:    spec.Container{CPU: spec.CPU{Units: 2500, Mask: "0,1"}},
			want: Resources{CPUPeriod: 100000, CPUWeight: 2500, CPUs: "0,1"},
		},
		{
			name: "memory, swap, processes",
			c:    spec.Container{Memory: spec.Memory{RAM: 1 << 30, Swap: 512 << 20}, Processes: 300},
			want: Resources{CPUPeriod: 100000, Memory: 1 << 30, Swap: 512 << 20, Pids: 300},
		},
		{
			name: "disk limits on the loop device",
			c:    spec.Container{Disk: spec.Disk{IOPSLimit: 500, IOLimit: 50 << 20}},
			dev:  "7:3",
			want: Resources{CPUPeriod: 100000, BlockDevice: "7:3", IOPS: 500, BPS: 50 << 20},
		},
		{
			name: "disk limits without a device: nothing to throttle",
			c:    spec.Container{Disk: spec.Disk{IOPSLimit: 500}},
			want: Resources{CPUPeriod: 100000},
		},
		{
			name: "device but no disk limits",
			dev:  "7:3",
			want: Resources{CPUPeriod: 100000},
		},
		{
			name: "unresolvable device left out",
			c:    spec.Container{Devices: []spec.Device{{Path: "/nonexistent/dev", Access: "rw"}}},
			want: Resources{CPUPeriod: 100000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromSpec(&tt.c, tt.dev)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FromSpec = %+v\nwant       %+v", got, tt.want)
			}
		})
	}
}

func TestUnitsMapping(t *testing.T) {
	for _, tt := range []struct{ units, shares, weight uint64 }{
		{0, 1024, 100}, // unset: the default
		{1000, 1024, 100},
		{1, 2, 1}, // clamped to the kernel's minimum
		{2000, 2048, 200},
		{500, 512, 50},
		{256000, 262144, 10000},
		{15, 15, 2},
		{500000, 262144, 10000}, // clamped to the kernel's maximum
	} {
		if s := sharesFromUnits(tt.units); s != tt.shares {
			t.Errorf("sharesFromUnits(%d) = %d, want %d", tt.units, s, tt.shares)
		}
		if w := weightFromUnits(tt.units); w != tt.weight {
			t.Errorf("weightFromUnits(%d) = %d, want %d", tt.units, w, tt.weight)
		}
	}
	prevW := uint64(0)
	for u := uint64(1); u <= 300000; u += 7 {
		w := weightFromUnits(u)
		if w < prevW {
			t.Fatalf("weightFromUnits not monotonic at %d: %d < %d", u, w, prevW)
		}
		prevW = w
		// Read's inverses land on a value with the same kernel setting.
		if s := sharesFromUnits(u); sharesFromUnits(unitsFromShares(s)) != s {
			t.Errorf("shares %d (units %d) do not round-trip: %d", s, u, sharesFromUnits(unitsFromShares(s)))
		}
		if got := weightFromUnits(unitsFromWeight(w)); got != w {
			t.Errorf("weight %d (units %d) does not round-trip: %d", w, u, got)
		}
	}
}

func TestDrift(t *testing.T) {
	want := Resources{CPUQuota: 50000, CPUWeight: 1000, Memory: 100000001, Pids: 5}
	// What the kernel gives back: period filled in, memory rounded to a
	// page, shares 1024 read back as 1000 units.
	got := Resources{CPUPeriod: 100000, CPUQuota: 50000, CPUWeight: 1000, Memory: 99999744, Pids: 5,
		Devices: append([]DeviceRule(nil), DefaultDevices...)}
	if d := Drift(1, want, got); len(d) != 0 {
		t.Errorf("Drift = %q, want none", d)
	}
	got.Pids = 6
	got.Devices = got.Devices[1:]
	if d := Drift(1, want, got); len(d) != 2 {
		t.Errorf("Drift = %q, want pids and devices", d)
	}
	// Devices are not compared on v2 (not enforced there).
	if d := Drift(2, want, got); len(d) != 1 {
		t.Errorf("Drift v2 = %q, want pids only", d)
	}
}

func TestDeviceRuleString(t *testing.T) {
	for _, tt := range []struct {
		r    DeviceRule
		want string
	}{
		{DeviceRule{'c', 1, 3, "rwm"}, "c 1:3 rwm"},
		{DeviceRule{'c', 136, -1, "mwr"}, "c 136:* rwm"},
		{DeviceRule{'b', -1, -1, "m"}, "b *:* m"},
		{DeviceRule{'c', 10, 229, ""}, "c 10:229 rwm"},
	} {
		if s := tt.r.String(); s != tt.want {
			t.Errorf("%+v = %q, want %q", tt.r, s, tt.want)
		}
		back, err := parseDeviceRule(tt.want)
		if err != nil || back.String() != tt.want {
			t.Errorf("parse %q = %+v, %v", tt.want, back, err)
		}
	}
	for _, bad := range []string{"", "c 1:3", "c 13 rwm", "c x:1 rwm"} {
		if _, err := parseDeviceRule(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

func TestCanonCPUs(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"0":         "0",
		"0,1":       "0-1",
		"3,0-1,2,7": "0-3,7",
		"1-1":       "1",
		"x":         "x",
		"3-1":       "3-1",
	} {
		if got := canonCPUs(in); got != want {
			t.Errorf("canonCPUs(%q) = %q, want %q", in, got, want)
		}
	}
	if d := Drift(2, Resources{CPUs: "0,1"}, Resources{CPUs: "0-1"}); len(d) != 0 {
		t.Errorf("Drift of equal CPU lists: %q", d)
	}
	if d := Drift(2, Resources{}, Resources{CPUs: "0-1"}); len(d) != 0 {
		t.Errorf("Drift of an unset list: %q", d)
	}
}
