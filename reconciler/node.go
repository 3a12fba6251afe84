package reconciler

import (
	"context"
	"time"

	"vzd/spec"
)

// Actual is what the node has for one container, as observed from the
// kernel (mounts, loop devices, processes, cgroups, links).
type Actual struct {
	ImageExists   bool   // a complete image is in the private area
	Mounted       bool   // the root is mounted at VE_ROOT
	DiskSize      uint64 // bytes of the file system now
	PendingGrow   bool   // a grow is waiting for the next stop/start
	Running       bool
	Pid           int
	StartTime     uint64 // of the init, from /proc/PID/stat
	StartedAt     time.Time
	AppliedApps   []string // application templates installed
	NetworkDrift  bool     // links or addresses differ from the applied spec (when Observe can tell)
	LimitsDrift   bool     // cgroup limits read back differ from the spec
	ObservedError string   // observation problems worth reporting
}

// Node performs steps on the node. Every method is idempotent: doing a
// step that is already done returns nil, and undoing something absent
// returns nil. Methods take the container spec to act on (the desired one,
// or the last known one when removing).
type Node interface {
	Observe(ctx context.Context, c *spec.Container) (Actual, error)

	CreateImage(ctx context.Context, c *spec.Container) error
	Mount(ctx context.Context, c *spec.Container) error
	Resize(ctx context.Context, c *spec.Container) (pending bool, err error)
	ApplyTemplates(ctx context.Context, c *spec.Container, running bool) error
	ApplyLimits(ctx context.Context, c *spec.Container) error
	Start(ctx context.Context, c *spec.Container) error
	// ApplyNetwork converges links, addresses, hostname and resolver files
	// of a running container; it returns the changes it cannot make live.
	ApplyNetwork(ctx context.Context, c *spec.Container) (needsRestart []string, err error)
	Stop(ctx context.Context, c *spec.Container) error
	// Teardown removes what only a running container needs (links,
	// cgroup) after Stop.
	Teardown(ctx context.Context, c *spec.Container) error
	Unmount(ctx context.Context, c *spec.Container) error
	Destroy(ctx context.Context, c *spec.Container) error
}
