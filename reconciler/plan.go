package reconciler

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"vzd/spec"
)

// StepKind names one idempotent step. The strings appear in `vzd plan`
// output and in logs; changing them breaks scripts that parse them.
type StepKind string

const (
	StepCreateImage StepKind = "create-image"
	StepResize      StepKind = "resize"
	StepMount       StepKind = "mount"
	StepTemplates   StepKind = "templates"
	StepLimits      StepKind = "limits"
	StepStart       StepKind = "start"
	StepNetwork     StepKind = "network"
	StepStop        StepKind = "stop"
	StepTeardown    StepKind = "teardown"
	StepUnmount     StepKind = "unmount"
	StepDestroy     StepKind = "destroy"
)

// Step is one thing to do. Live steps change a running container without
// restarting it.
type Step struct {
	Kind   StepKind `json:"step"`
	Live   bool     `json:"live,omitempty"`
	Reason string   `json:"reason"`
}

func (s Step) String() string {
	live := ""
	if s.Live {
		live = " (live)"
	}
	return fmt.Sprintf("%s%s: %s", s.Kind, live, s.Reason)
}

// Plan is what one pass will do to one container.
type Plan struct {
	ID    string `json:"id"`
	Steps []Step `json:"steps"`
	// Pending lists changes that need a restart and wait for one (the
	// spec does not set restart_to_apply).
	Pending []string `json:"pending,omitempty"`
	// Notes explain a plan that does less than the file asks.
	Notes []string `json:"notes,omitempty"`
}

// Input is everything Make needs; it does no I/O.
type Input struct {
	ID string
	// Desired is the spec to converge to: the file's, or the last good
	// one when the file is invalid. Nil when no file declares the ID.
	Desired *spec.Container
	// Held is set when the container's file failed and there is no last
	// good spec: nothing may be done to it.
	Held   bool
	Record *Record // nil: vzd has never managed it
	Actual Actual
	BootID string // this boot's /proc/sys/kernel/random/boot_id
	// DesiredHash is Desired.Hash() when the caller knows it ("" = compute
	// it): the loop remembers the hash of each loaded spec across passes.
	DesiredHash string
}

// desiredHash returns Desired's hash.
func (in Input) desiredHash() string {
	if in.DesiredHash != "" {
		return in.DesiredHash
	}
	return in.Desired.Hash()
}

// sizeSlack is how far a file system's size may differ from the spec
// before a resize is planned: mkfs and resize2fs round to blocks and
// groups.
const sizeSlack = 4 << 20

// Make computes the plan for one container. It is pure, so every rule is
// covered by table tests.
func Make(in Input) Plan {
	p := Plan{ID: in.ID}
	d, a, rec := in.Desired, in.Actual, in.Record
	add := func(k StepKind, live bool, why string, args ...any) {
		p.Steps = append(p.Steps, Step{k, live, fmt.Sprintf(why, args...)})
	}
	stopAll := func(why string) {
		if a.Running {
			add(StepStop, false, "%s", why)
			add(StepTeardown, false, "release links and cgroup")
		}
	}

	if in.Held {
		p.Notes = append(p.Notes, "config file is invalid and no earlier valid spec is known: nothing is changed")
		return p
	}
	if d == nil {
		if rec == nil && !a.Running && !a.Mounted {
			return p
		}
		p.Notes = append(p.Notes, "orphaned: no config file declares it; its data is kept (state = \"destroyed\" or `vzd destroy` removes it)")
		stopAll("its config file was removed")
		if a.Mounted {
			add(StepUnmount, false, "not declared")
		}
		return p
	}

	switch d.State {
	case spec.StateDestroyed:
		stopAll("state is destroyed")
		if a.Mounted {
			add(StepUnmount, false, "state is destroyed")
		}
		if a.ImageExists || rec != nil {
			add(StepDestroy, false, "state is destroyed: remove its private area")
		}
		return p

	case spec.StateStopped:
		stopAll("state is stopped")
		if !a.ImageExists {
			add(StepCreateImage, false, "declared, no image yet")
		}
		if a.Mounted {
			add(StepUnmount, false, "state is stopped")
		}
		if a.ImageExists && sizeDiffers(d, a) {
			add(StepResize, false, "disk size %s -> %s (offline)", human(a.DiskSize), human(d.Disk.Size))
		}
		return p
	}

	// Running.
	if !a.ImageExists {
		add(StepCreateImage, false, "declared, no image yet")
	}
	if !a.Running {
		if rec != nil && rec.BootID != "" && in.BootID != "" && rec.BootID != in.BootID &&
			!d.OnBoot && !rec.StartRequested {
			p.Notes = append(p.Notes, "not started after the node rebooted: onboot is off (`vzd start` starts it)")
			return p
		}
		if a.ImageExists && (sizeDiffers(d, a) || a.PendingGrow) {
			if a.Mounted {
				add(StepUnmount, false, "resize the file system offline before start")
			}
			add(StepResize, false, "disk size %s -> %s (offline)", human(a.DiskSize), human(d.Disk.Size))
			add(StepMount, false, "mount the root")
		} else if !a.Mounted {
			add(StepMount, false, "mount the root")
		}
		if !sameSet(a.AppliedApps, d.Templates) {
			add(StepTemplates, false, "application templates %v -> %v", a.AppliedApps, d.Templates)
		}
		add(StepLimits, false, "create cgroup and apply limits")
		add(StepStart, false, "state is running")
		add(StepNetwork, false, "interfaces, addresses, hostname, resolver")
		return p
	}

	// Running now: live changes, then what needs a restart.
	hashChanged := rec == nil || rec.AppliedHash != in.desiredHash()
	if hashChanged || a.LimitsDrift {
		add(StepLimits, true, "%s", reason(hashChanged, "limits changed", "limits drifted from the spec"))
	}
	if hashChanged || a.NetworkDrift {
		add(StepNetwork, true, "%s", reason(hashChanged, "network, hostname or resolver may have changed", "links or addresses drifted"))
	}
	if !sameSet(a.AppliedApps, d.Templates) {
		add(StepTemplates, true, "application templates %v -> %v", a.AppliedApps, d.Templates)
	}
	if d.Disk.Size > a.DiskSize+sizeSlack && !a.PendingGrow {
		add(StepResize, true, "grow disk %s -> %s", human(a.DiskSize), human(d.Disk.Size))
	}
	var pending []string
	if a.PendingGrow {
		pending = append(pending, "disk grow: the kernel refused an online grow; done at the next stop/start")
	}
	if d.Disk.Size != 0 && d.Disk.Size+sizeSlack < a.DiskSize {
		pending = append(pending, fmt.Sprintf("disk shrink %s -> %s needs a stop", human(a.DiskSize), human(d.Disk.Size)))
	}
	if rec != nil && rec.Started != nil {
		pending = append(pending, RestartChanges(rec.Started, d)...)
	}
	if len(pending) > 0 && d.RestartToApply {
		p.Steps = append(p.Steps[:0:0], // a restart applies the live steps too
			Step{StepStop, false, "restart to apply: " + strings.Join(pending, "; ")},
			Step{StepTeardown, false, "release links and cgroup"},
			Step{StepUnmount, false, "remount with the new settings"})
		if d.Disk.Size != 0 && (sizeDiffers(d, a) || a.PendingGrow) {
			add(StepResize, false, "disk size %s -> %s (offline)", human(a.DiskSize), human(d.Disk.Size))
		}
		add(StepMount, false, "mount the root")
		if !sameSet(a.AppliedApps, d.Templates) {
			add(StepTemplates, false, "application templates %v -> %v", a.AppliedApps, d.Templates)
		}
		add(StepLimits, false, "apply limits")
		add(StepStart, false, "restart to apply changes")
		add(StepNetwork, false, "interfaces, addresses, hostname, resolver")
		return p
	}
	p.Pending = pending
	return p
}

func reason(changed bool, ifChanged, ifDrift string) string {
	if changed {
		return ifChanged
	}
	return ifDrift
}

func sizeDiffers(d *spec.Container, a Actual) bool {
	if d.Disk.Size == 0 || a.DiskSize == 0 {
		return false
	}
	diff := int64(d.Disk.Size) - int64(a.DiskSize)
	return diff > sizeSlack || diff < -sizeSlack
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// restartFields are the parts of a spec that only take effect when the
// container starts: its namespaces, mounts and init. Everything else is
// applied live.
func restartFields(c *spec.Container) map[string]any {
	devs := slices.Clone(c.Devices)
	sort.Slice(devs, func(i, j int) bool { return devs[i].Path < devs[j].Path })
	return map[string]any{
		"privileged":  c.Privileged,
		"init":        c.Init,
		"uid/gid map": [2]uint32{c.UIDBase, c.GIDBase},
		"sysctl":      c.Sysctl,
		"root path":   c.Root,
		"private":     c.Private,
		"devices":     devs,
		"dedup":       !c.NoDedup,
	}
}

// RestartChanges lists the restart-only fields that differ between the
// spec a container was started with and the desired one.
func RestartChanges(started, desired *spec.Container) []string {
	a, b := restartFields(started), restartFields(desired)
	var out []string
	for k, v := range b {
		x, _ := json.Marshal(a[k])
		y, _ := json.Marshal(v)
		if string(x) != string(y) {
			out = append(out, k+" changed (needs a restart)")
		}
	}
	if started.OSTemplate != desired.OSTemplate && started.OSTemplate != "" {
		out = append(out, "ostemplate changed: only a new container gets a new OS (ignored)")
	}
	sort.Strings(out)
	return out
}

func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
