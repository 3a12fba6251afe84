// Package cgroups applies a container's limits through cgroupfs, with a
// driver for cgroup v1 (including the hybrid layout of older systemd hosts)
// and one for the unified cgroup v2 hierarchy.
package cgroups

import "context"

// Resources are the limits of one container in kernel terms. Zero values
// mean "no limit" (the driver writes the kernel's unlimited value), so
// applying a Resources with a field cleared removes that limit live.
type Resources struct {
	CPUPeriod uint64 // µs; 100000 when zero
	CPUQuota  int64  // µs per period; 0 = unlimited
	CPUWeight uint64 // legacy CPUUNITS scale (default 1000); mapped to shares (v1) or weight (v2)
	CPUs      string // cpuset list, "" = all of the parent's

	Memory uint64 // bytes; 0 = unlimited
	Swap   uint64 // bytes of swap on top of Memory; applied where the kernel accounts swap
	Pids   uint64 // 0 = unlimited

	// Block I/O throttling on one device (the container's loop device).
	BlockDevice string // "major:minor"; empty = no throttling
	IOPS        uint64 // read and write operations per second each
	BPS         uint64 // read and write bytes per second each

	Devices []DeviceRule // allowed device nodes beyond the default set
}

// DeviceRule allows one device node: Type 'c' or 'b', Major/Minor (-1 =
// any), Access a subset of "rwm".
type DeviceRule struct {
	Type   rune
	Major  int64
	Minor  int64
	Access string
}

// Manager places containers in cgroups and applies their limits. All
// methods are idempotent; methods on an absent cgroup return nil
// (Remove, Kill) or an error wrapping fs.ErrNotExist (Apply, Read, Procs).
type Manager interface {
	// Create makes the container's cgroup (in every controller for v1).
	Create(ctx context.Context, id string) error
	// Apply writes r to the container's cgroup; applied live.
	Apply(ctx context.Context, id string, r Resources) error
	// Read reads the limits back, for drift detection.
	Read(ctx context.Context, id string) (Resources, error)
	// AddProc moves pid into the container's cgroup.
	AddProc(ctx context.Context, id string, pid int) error
	// Procs lists the pids in the container's cgroup (all controllers' union).
	Procs(ctx context.Context, id string) ([]int, error)
	// Kill sends SIGKILL to every process of the cgroup (freezing first so
	// none escapes by forking) and waits until it is empty or ctx ends.
	Kill(ctx context.Context, id string) error
	// Delegate chowns the container's cgroup directory and the files a
	// nested manager writes to uid:gid, so that systemd in an unprivileged
	// container can manage its own subtree.
	Delegate(ctx context.Context, id string, uid, gid int) error
	// Remove deletes the container's cgroup (and its children); it must
	// be empty.
	Remove(ctx context.Context, id string) error
	// Dirs returns the container's cgroup directories: controller name (or
	// "" for v2) to absolute path. The runtime uses it to mount the
	// container's view of cgroupfs.
	Dirs(id string) map[string]string
	// Version is 1 or 2.
	Version() int
}
