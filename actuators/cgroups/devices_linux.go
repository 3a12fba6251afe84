package cgroups

import (
	"fmt"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

// DeviceRuleFor resolves a configured device node to a rule by stat'ing
// the host's node (the node's type and number are what the kernel checks,
// not its path).
func DeviceRuleFor(d spec.Device) (DeviceRule, error) {
	var st unix.Stat_t
	if err := unix.Stat(d.Path, &st); err != nil {
		return DeviceRule{}, fmt.Errorf("stat device %s: %w", d.Path, err)
	}
	var typ rune
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = 'c'
	case unix.S_IFBLK:
		typ = 'b'
	default:
		return DeviceRule{}, fmt.Errorf("device %s: not a device node", d.Path)
	}
	return DeviceRule{
		Type:   typ,
		Major:  int64(unix.Major(st.Rdev)),
		Minor:  int64(unix.Minor(st.Rdev)),
		Access: normAccess(d.Access),
	}, nil
}
