package cgroups

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultDevices is the device allow-list every container gets, the set
// LXC and runc allow by default: mknod of any character or block device
// (creating a node grants nothing; opening it is what the list guards),
// and read/write/mknod of the harmless nodes a system needs.
// Callers must not modify it.
var DefaultDevices = []DeviceRule{
	{Type: 'c', Major: -1, Minor: -1, Access: "m"},    // mknod any char device
	{Type: 'b', Major: -1, Minor: -1, Access: "m"},    // mknod any block device
	{Type: 'c', Major: 1, Minor: 3, Access: "rwm"},    // /dev/null
	{Type: 'c', Major: 1, Minor: 5, Access: "rwm"},    // /dev/zero
	{Type: 'c', Major: 1, Minor: 7, Access: "rwm"},    // /dev/full
	{Type: 'c', Major: 1, Minor: 8, Access: "rwm"},    // /dev/random
	{Type: 'c', Major: 1, Minor: 9, Access: "rwm"},    // /dev/urandom
	{Type: 'c', Major: 5, Minor: 0, Access: "rwm"},    // /dev/tty
	{Type: 'c', Major: 5, Minor: 1, Access: "rwm"},    // /dev/console
	{Type: 'c', Major: 5, Minor: 2, Access: "rwm"},    // /dev/ptmx
	{Type: 'c', Major: 136, Minor: -1, Access: "rwm"}, // /dev/pts/*
}

// String formats the rule as the v1 devices controller writes it in
// devices.list ("c 136:* rwm"), so rules compare as strings.
func (d DeviceRule) String() string {
	num := func(n int64) string {
		if n < 0 {
			return "*"
		}
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprintf("%c %s:%s %s", d.Type, num(d.Major), num(d.Minor), normAccess(d.Access))
}

// normAccess puts access letters in the kernel's order, "rwm"; empty
// means all three.
func normAccess(a string) string {
	if a == "" {
		return "rwm"
	}
	var b strings.Builder
	for _, c := range "rwm" {
		if strings.ContainsRune(a, c) {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// parseDeviceRule parses one line of devices.list.
func parseDeviceRule(s string) (DeviceRule, error) {
	f := strings.Fields(s)
	if len(f) != 3 || len(f[0]) != 1 {
		return DeviceRule{}, fmt.Errorf("parse device rule %q: want \"TYPE MAJ:MIN ACCESS\"", s)
	}
	maj, min, ok := strings.Cut(f[1], ":")
	if !ok {
		return DeviceRule{}, fmt.Errorf("parse device rule %q: want MAJ:MIN", s)
	}
	num := func(s string) (int64, error) {
		if s == "*" {
			return -1, nil
		}
		return strconv.ParseInt(s, 10, 64)
	}
	r := DeviceRule{Type: rune(f[0][0]), Access: normAccess(f[2])}
	var err error
	if r.Major, err = num(maj); err != nil {
		return DeviceRule{}, fmt.Errorf("parse device rule %q: %w", s, err)
	}
	if r.Minor, err = num(min); err != nil {
		return DeviceRule{}, fmt.Errorf("parse device rule %q: %w", s, err)
	}
	return r, nil
}

// deviceList is the full allow-list for r: the defaults, then r.Devices,
// as devices.list strings without duplicates.
func deviceList(extra []DeviceRule) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range append(append([]DeviceRule(nil), DefaultDevices...), extra...) {
		s := d.String()
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
