// Package cgroups applies a container's limits through cgroupfs, with a
// driver for cgroup v1 (including the hybrid layout of older systemd hosts)
// and one for the unified cgroup v2 hierarchy.
//
// Layout: a container's cgroup is <root>/<controller>/<parent>/<id> on v1
// (one directory per mounted hierarchy, name=systemd and, on a hybrid host,
// the controller-less cgroup2 mount at <root>/unified included) and
// <root>/<parent>/<id> on v2. The parent ("vzd" by default) sits at the top
// of each hierarchy, outside the agent's own cgroup, so that restarting
// the agent's unit touches no container.
//
// The drivers write the control files directly (one write per limit, the
// kernel's own text format) rather than going through a library: the set
// of files is small and the error then names exactly the file and value
// the kernel refused.
//
// Not done on v2: the device allow-list. cgroup v2 has no devices files;
// it needs an eBPF program attached to the cgroup (BPF_CGROUP_DEVICE),
// which this package does not implement. The v2 driver therefore applies
// no device restriction at all; Resources.Devices and DefaultDevices are
// enforced on v1 only.
package cgroups

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Defaults of New, NewV1 and NewV2.
const (
	DefaultRoot   = "/sys/fs/cgroup"
	DefaultParent = "vzd"
)

// ErrSwapNotAccounted is returned (wrapped) by Apply when Resources.Swap is
// set but the kernel does not account swap (no memory.memsw.* files on v1,
// no memory.swap.max on v2). Every other limit has been applied; the caller
// reports the swap limit as not enforceable rather than retrying.
var ErrSwapNotAccounted = errors.New("kernel does not account swap")

// Resources are the limits of one container in kernel terms. Zero values
// mean "no limit" (the driver writes the kernel's unlimited value), so
// applying a Resources with a field cleared removes that limit live.
type Resources struct {
	CPUPeriod uint64 // µs; 100000 when zero
	CPUQuota  int64  // µs per period; 0 = unlimited
	CPUWeight uint64 // legacy CPUUNITS scale (0 = default 1000); mapped to shares (v1) or weight (v2)
	CPUs      string // cpuset list, "" = all of the parent's

	Memory uint64 // bytes; 0 = unlimited
	Swap   uint64 // bytes of swap on top of Memory (ignored when Memory is 0); applied where the kernel accounts swap
	Pids   uint64 // 0 = unlimited

	// Block I/O throttling on one device (the container's loop device).
	// Throttles on any other device are removed by Apply.
	BlockDevice string // "major:minor"; empty = no throttling
	IOPS        uint64 // read and write operations per second each; 0 = unlimited
	BPS         uint64 // read and write bytes per second each; 0 = unlimited

	Devices []DeviceRule // allowed device nodes beyond DefaultDevices (v1 only)
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
// Methods for different ids may run concurrently.
type Manager interface {
	// Create makes the container's cgroup (in every controller for v1).
	Create(ctx context.Context, id string) error
	// Apply writes r to the container's cgroup; applied live.
	Apply(ctx context.Context, id string, r Resources) error
	// Read reads the limits back, for drift detection. Compare with
	// Drift, not ==: the kernel rounds memory to pages, rewrites CPU
	// lists, and units come back through the shares/weight mapping. The
	// cpuset is the one in force (the parent's when none was set), and
	// on v1 Devices is the whole allow-list, DefaultDevices included
	// ("a *:* rwm" when unrestricted).
	Read(ctx context.Context, id string) (Resources, error)
	// AddProc moves pid into the container's cgroup (every hierarchy on
	// v1).
	AddProc(ctx context.Context, id string, pid int) error
	// Procs lists the pids in the container's cgroup and its child
	// cgroups, sorted (on v1 the union over the hierarchies).
	Procs(ctx context.Context, id string) ([]int, error)
	// Kill sends SIGKILL to every process of the cgroup and its children
	// (freezing first so none escapes by forking; cgroup.kill where the
	// kernel has it) and waits, polling, until it is empty, ctx ends, or
	// 10 s pass. It never leaves the cgroup frozen.
	Kill(ctx context.Context, id string) error
	// Delegate chowns the container's cgroup directory and the files a
	// nested manager writes to uid:gid, so that systemd in an unprivileged
	// container can manage its own subtree.
	Delegate(ctx context.Context, id string, uid, gid int) error
	// Remove deletes the container's cgroup and its children, deepest
	// first, in every hierarchy. With processes inside it fails at once
	// with an error wrapping EBUSY. The parent stays.
	Remove(ctx context.Context, id string) error
	// Dirs returns the container's cgroup directories: hierarchy to
	// absolute path. On v1 the keys are the hierarchies' mount options
	// ("cpu", "memory", ..., "name=systemd"); the key "" is a cgroup2
	// hierarchy (the whole tree on v2, the controller-less
	// <root>/unified on a hybrid v1 host). The runtime uses it to mount
	// the container's view of cgroupfs.
	Dirs(id string) map[string]string
	// Version is 1 or 2.
	Version() int
}

// pageSize is what the kernel rounds memory limits down to.
const pageSize = 4096

// Drift lists the differences between the limits a container should have
// (want) and those Read returned (got) on a cgroup of the given version,
// comparing the values the kernel holds: units are compared as shares
// (v1) or weight (v2), memory rounded down to pages, an unset period as
// the default, CPU lists by the CPUs they name ("0,1" is "0-1"), an unset
// CPU list not at all. Devices are compared on v1 only. Empty means no drift.
// Where Apply reported ErrSwapNotAccounted, clear want.Swap first: the
// kernel holds no swap limit to compare.
func Drift(version int, want, got Resources) []string {
	var d []string
	diff := func(name string, w, g any) {
		if w != g {
			d = append(d, fmt.Sprintf("%s: want %v, have %v", name, w, g))
		}
	}
	period := func(p uint64) uint64 {
		if p == 0 {
			return DefaultCPUPeriod
		}
		return p
	}
	if want.CPUQuota != 0 || got.CPUQuota != 0 {
		diff("cpu period", period(want.CPUPeriod), period(got.CPUPeriod))
	}
	diff("cpu quota", want.CPUQuota, got.CPUQuota)
	if version == 2 {
		diff("cpu weight", weightFromUnits(want.CPUWeight), weightFromUnits(got.CPUWeight))
	} else {
		diff("cpu shares", sharesFromUnits(want.CPUWeight), sharesFromUnits(got.CPUWeight))
	}
	// An unset mask means the parent's set, which v1 copies in: the value
	// read back then is whatever the parent has, not drift.
	if want.CPUs != "" {
		diff("cpus", canonCPUs(want.CPUs), canonCPUs(got.CPUs))
	}
	diff("memory", want.Memory/pageSize*pageSize, got.Memory/pageSize*pageSize)
	if want.Memory != 0 {
		diff("swap", want.Swap/pageSize*pageSize, got.Swap/pageSize*pageSize)
	}
	diff("pids", want.Pids, got.Pids)
	if want.IOPS != 0 || want.BPS != 0 {
		diff("block device", want.BlockDevice, got.BlockDevice)
	}
	diff("iops", want.IOPS, got.IOPS)
	diff("bps", want.BPS, got.BPS)
	if version == 1 {
		// Read returns the whole kernel list, defaults included.
		w := deviceList(want.Devices)
		var g []string
		for _, r := range got.Devices {
			g = append(g, r.String())
		}
		slices.Sort(w)
		g = slices.Compact(slices.Sorted(slices.Values(g)))
		diff("devices", strings.Join(w, ", "), strings.Join(g, ", "))
	}
	return d
}

// canonCPUs rewrites a CPU list ("0,1,2,5") in the kernel's form
// ("0-2,5"). A list it cannot parse is returned as it is.
func canonCPUs(s string) string {
	var cpus []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return s
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 1<<16 {
				return s
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	cpus = slices.Compact(cpus)
	var out []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if i == j {
			out = append(out, strconv.Itoa(cpus[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		}
		i = j + 1
	}
	return strings.Join(out, ",")
}
