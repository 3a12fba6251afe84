package cgroups

import (
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
)

// New returns the driver for this host's cgroups under DefaultRoot with
// DefaultParent: v1 when the memory controller is mounted as a v1
// hierarchy (legacy and hybrid layouts), else v2 when the root is a
// cgroup2 mount.
func New(log *slog.Logger) (Manager, error) {
	root := DefaultRoot
	if exists(filepath.Join(root, "memory"), "cgroup.procs") {
		return NewV1(root, DefaultParent, log)
	}
	if exists(root, "cgroup.controllers") {
		return NewV2(root, DefaultParent, log)
	}
	return nil, fmt.Errorf("no cgroup v1 memory hierarchy or cgroup2 mount at %s: %w", root, fs.ErrNotExist)
}
