package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// hierarchy is one mounted cgroup hierarchy on a v1 host.
type hierarchy struct {
	key string // mount option: "cpu", "name=systemd"; "" for cgroup2
	dir string // mount point
}

// v1Hierarchies are the hierarchies the v1 driver uses, by directory
// under the root. On hosts that co-mount cpu and cpuacct, "cpu" and
// "cpuacct" are symlinks to "cpu,cpuacct": both resolve to the same
// directory, which every method tolerates (mkdir of an existing cgroup
// and rmdir of a removed one are no-ops).
var v1Hierarchies = []struct{ key, name string }{
	{"cpu", "cpu"},
	{"cpuacct", "cpuacct"},
	{"cpuset", "cpuset"},
	{"memory", "memory"},
	{"blkio", "blkio"},
	{"pids", "pids"},
	{"devices", "devices"},
	{"freezer", "freezer"},
	// systemd inside a container looks for its own subtree here.
	{"name=systemd", "systemd"},
	// The hybrid layout's controller-less cgroup2 mount: a container's
	// systemd runs in hybrid mode when it finds its cgroup there too.
	{"", "unified"},
}

// unlimited64 is what v1 reads back for "no limit" in memory files
// (PAGE_COUNTER_MAX pages); anything this large is unlimited.
const unlimited64 = 1 << 62

type v1 struct {
	root, parent string
	log          *slog.Logger
	hier         []hierarchy
	byKey        map[string]string
}

// NewV1 returns the cgroup v1 driver for the hierarchies mounted under
// root (DefaultRoot when ""), with container cgroups below parent
// (DefaultParent when "") in each. Hierarchies that are not mounted are
// skipped; the memory and freezer controllers are required.
func NewV1(root, parent string, log *slog.Logger) (Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	if parent == "" {
		parent = DefaultParent
	}
	if err := checkParent(parent); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &v1{root: root, parent: parent, log: log, byKey: map[string]string{}}
	for _, h := range v1Hierarchies {
		dir := filepath.Join(root, h.name)
		probe := "cgroup.procs"
		if h.key == "" {
			probe = "cgroup.controllers" // only cgroup2 has it
		}
		if !exists(dir, probe) {
			continue
		}
		m.hier = append(m.hier, hierarchy{key: h.key, dir: dir})
		m.byKey[h.key] = dir
	}
	for _, need := range []string{"memory", "freezer"} {
		if _, ok := m.byKey[need]; !ok {
			return nil, fmt.Errorf("cgroup v1 at %s: %s controller not mounted: %w", root, need, fs.ErrNotExist)
		}
	}
	log.Debug("cgroup v1 driver", "root", root, "parent", parent, "hierarchies", len(m.hier))
	return m, nil
}

// checkParent refuses parents that would leave the hierarchy.
func checkParent(p string) error {
	if filepath.IsAbs(p) || !filepath.IsLocal(p) {
		return fmt.Errorf("cgroup parent %q: must be a relative path inside the hierarchy", p)
	}
	return nil
}

// checkID refuses ids that are not a single path element.
func checkID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("cgroup name %q: must be one path element", id)
	}
	return nil
}

func (m *v1) Version() int { return 1 }

// path is the container's directory in the hierarchy key, or "" when that
// hierarchy is not mounted.
func (m *v1) path(key, id string) string {
	dir, ok := m.byKey[key]
	if !ok {
		return ""
	}
	return filepath.Join(dir, m.parent, id)
}

func (m *v1) Dirs(id string) map[string]string {
	out := make(map[string]string, len(m.hier))
	for _, h := range m.hier {
		out[h.key] = filepath.Join(h.dir, m.parent, id)
	}
	return out
}

func (m *v1) Create(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	for _, h := range m.hier {
		if h.key == "cpuset" {
			if err := m.mkCpuset(filepath.Join(m.parent, id)); err != nil {
				return err
			}
			continue
		}
		dir := filepath.Join(h.dir, m.parent, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, unwrapPath(err))
		}
	}
	m.log.Debug("cgroup created", "id", id)
	return nil
}

// mkCpuset creates rel below the cpuset root one level at a time. A new v1
// cpuset starts with empty cpuset.cpus and cpuset.mems, and a process
// cannot join a cpuset without CPUs or memory nodes (ENOSPC), so each new
// level copies its parent's values (the classic v1 pitfall;
// cgroup.clone_children would do it too, but only for children created
// after it was set, and it is a property of the parent we may not own).
func (m *v1) mkCpuset(rel string) error {
	dir := m.byKey["cpuset"]
	for _, part := range strings.Split(filepath.Clean(rel), string(filepath.Separator)) {
		parent := dir
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, unwrapPath(err))
		}
		// Children made below (by a nested runtime in a delegated
		// container) copy the values themselves.
		if err := writeFile(dir, "cgroup.clone_children", "1"); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := readFile(dir, f)
			if err != nil {
				return err
			}
			if cur != "" {
				continue
			}
			v, err := readFile(parent, f)
			if err != nil {
				return err
			}
			if err := writeFile(dir, f, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// present returns fs.ErrNotExist (wrapped) when the container's cgroup is
// absent; the memory hierarchy is the witness, as in New's detection.
func (m *v1) present(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	dir := m.path("memory", id)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, unwrapPath(err))
	}
	return nil
}

func (m *v1) Apply(ctx context.Context, id string, r Resources) error {
	if err := m.present(id); err != nil {
		return err
	}
	// Apply what can be applied even when one limit fails, so that one
	// bad value does not leave the others stale.
	errs := []error{
		m.applyCPU(id, r),
		m.applyCpuset(id, r),
		m.applyMemory(id, r),
		m.applyPids(id, r),
		m.applyBlkio(id, r),
		m.applyDevices(id, r),
	}
	return errors.Join(errs...)
}

// need returns the container's directory in hierarchy key, or an error
// when the hierarchy is missing although a limit needs it.
func (m *v1) need(key, id, what string) (string, error) {
	dir := m.path(key, id)
	if dir == "" {
		return "", fmt.Errorf("%s: cgroup v1 %s controller not mounted: %w", what, key, errors.ErrUnsupported)
	}
	return dir, nil
}

func (m *v1) applyCPU(id string, r Resources) error {
	dir := m.path("cpu", id)
	if dir == "" {
		if r.CPUQuota != 0 || (r.CPUWeight != 0 && r.CPUWeight != 1000) {
			_, err := m.need("cpu", id, "cpu limit")
			return err
		}
		return nil
	}
	period := r.CPUPeriod
	if period == 0 {
		period = DefaultCPUPeriod
	}
	quota := r.CPUQuota
	if quota == 0 {
		quota = -1
	}
	// The kernel checks quota against period at each write, so a new pair
	// may be refused in one order and accepted in the other: write the
	// period, the quota, and the period again if it was refused first.
	errPeriod := writeFile(dir, "cpu.cfs_period_us", strconv.FormatUint(period, 10))
	if err := writeFile(dir, "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
		return err
	}
	if errPeriod != nil {
		if err := writeFile(dir, "cpu.cfs_period_us", strconv.FormatUint(period, 10)); err != nil {
			return err
		}
	}
	return writeFile(dir, "cpu.shares", strconv.FormatUint(sharesFromUnits(r.CPUWeight), 10))
}

func (m *v1) applyCpuset(id string, r Resources) error {
	dir := m.path("cpuset", id)
	if dir == "" {
		if r.CPUs != "" {
			_, err := m.need("cpuset", id, "cpu mask")
			return err
		}
		return nil
	}
	cpus := r.CPUs
	if cpus == "" {
		// "All of the parent's": v1 has no inherit value, copy it.
		var err error
		if cpus, err = readFile(filepath.Dir(dir), "cpuset.cpus"); err != nil {
			return err
		}
	}
	return writeFile(dir, "cpuset.cpus", cpus)
}

func (m *v1) applyMemory(id string, r Resources) error {
	dir := m.path("memory", id)
	mem := int64(-1)
	if r.Memory > 0 {
		mem = int64(r.Memory)
	}
	memStr := strconv.FormatInt(mem, 10)
	const memsw = "memory.memsw.limit_in_bytes"
	if !exists(dir, memsw) {
		// Swap is not accounted (CONFIG_MEMCG_SWAP off or swapaccount=0):
		// the RAM limit alone still holds.
		if err := writeFile(dir, "memory.limit_in_bytes", memStr); err != nil {
			return err
		}
		if r.Swap > 0 && r.Memory > 0 {
			return fmt.Errorf("swap limit of %s: %w", dir, ErrSwapNotAccounted)
		}
		return nil
	}
	// memsw limits memory+swap, and the kernel requires memsw >= memory at
	// every step: raise memsw first, lower it last.
	sw := int64(-1)
	if r.Memory > 0 && r.Swap > 0 {
		sw = int64(r.Memory + r.Swap)
	}
	cur, err := readInt(dir, memsw, "")
	if err != nil {
		return err
	}
	swStr := strconv.FormatInt(sw, 10)
	if sw == -1 || (cur < unlimited64 && sw > cur) {
		if err := writeFile(dir, memsw, swStr); err != nil {
			return err
		}
		return writeFile(dir, "memory.limit_in_bytes", memStr)
	}
	if err := writeFile(dir, "memory.limit_in_bytes", memStr); err != nil {
		return err
	}
	return writeFile(dir, memsw, swStr)
}

func (m *v1) applyPids(id string, r Resources) error {
	dir := m.path("pids", id)
	if dir == "" {
		if r.Pids != 0 {
			_, err := m.need("pids", id, "process limit")
			return err
		}
		return nil
	}
	v := "max"
	if r.Pids > 0 {
		v = strconv.FormatUint(r.Pids, 10)
	}
	return writeFile(dir, "pids.max", v)
}

// blkioFiles are the throttle files, with the Resources value each takes.
var blkioFiles = []struct {
	name string
	bps  bool
}{
	{"blkio.throttle.read_iops_device", false},
	{"blkio.throttle.write_iops_device", false},
	{"blkio.throttle.read_bps_device", true},
	{"blkio.throttle.write_bps_device", true},
}

// applyBlkio throttles r.BlockDevice and removes throttles on any other
// device (the container's loop device number changes when it is
// reattached). Writing "MAJ:MIN 0" removes a device's rule.
func (m *v1) applyBlkio(id string, r Resources) error {
	dir := m.path("blkio", id)
	if dir == "" {
		if r.BlockDevice != "" && (r.IOPS != 0 || r.BPS != 0) {
			_, err := m.need("blkio", id, "I/O limit")
			return err
		}
		return nil
	}
	for _, f := range blkioFiles {
		cur, err := readFile(dir, f.name)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(cur, "\n") {
			dev, _, _ := strings.Cut(line, " ")
			if dev != "" && dev != r.BlockDevice {
				if err := writeFile(dir, f.name, dev+" 0"); err != nil {
					return err
				}
			}
		}
		if r.BlockDevice == "" {
			continue
		}
		v := r.IOPS
		if f.bps {
			v = r.BPS
		}
		if err := writeFile(dir, f.name, fmt.Sprintf("%s %d", r.BlockDevice, v)); err != nil {
			return err
		}
	}
	return nil
}

// applyDevices makes devices.list exactly DefaultDevices + r.Devices. A
// new cgroup allows everything ("a *:* rwm"): deny all, then allow the
// list. A cgroup that already has a list is changed by difference
// (removed rules denied first, so that an access change such as rw → rwm
// is not merged away, then new rules allowed), because a "deny all" on a
// running container would make its open("/dev/null") fail for a moment
// and would take the access away from the container's own child cgroups,
// which a later allow on this cgroup does not give back. When the
// difference does not produce the exact list (the kernel merges
// overlapping rules), it falls back to deny all + allow.
func (m *v1) applyDevices(id string, r Resources) error {
	dir := m.path("devices", id)
	if dir == "" {
		return nil // not mounted: nothing to enforce with (logged by New)
	}
	want := deviceList(r.Devices)
	cur, err := m.readDevices(dir)
	if err != nil {
		return err
	}
	if sameSet(cur, want) {
		return nil
	}
	if !slices.Contains(cur, "a *:* rwm") {
		for _, c := range cur {
			if !slices.Contains(want, c) {
				if err := writeFile(dir, "devices.deny", c); err != nil {
					return err
				}
			}
		}
		for _, w := range want {
			if !slices.Contains(cur, w) {
				if err := writeFile(dir, "devices.allow", w); err != nil {
					return err
				}
			}
		}
		if cur, err = m.readDevices(dir); err != nil {
			return err
		}
		if sameSet(cur, want) {
			return nil
		}
		m.log.Warn("device list differs after update, resetting", "id", id, "have", cur)
	}
	if err := writeFile(dir, "devices.deny", "a"); err != nil {
		return err
	}
	for _, w := range want {
		if err := writeFile(dir, "devices.allow", w); err != nil {
			return err
		}
	}
	return nil
}

// readDevices returns devices.list, normalised through DeviceRule.
func (m *v1) readDevices(dir string) ([]string, error) {
	s, err := readFile(dir, "devices.list")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		r, err := parseDeviceRule(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "devices.list"), err)
		}
		out = append(out, r.String())
	}
	return out, nil
}

func sameSet(a, b []string) bool {
	a = slices.Compact(slices.Sorted(slices.Values(a)))
	b = slices.Compact(slices.Sorted(slices.Values(b)))
	return slices.Equal(a, b)
}

func (m *v1) Read(ctx context.Context, id string) (Resources, error) {
	var r Resources
	if err := m.present(id); err != nil {
		return r, err
	}
	if dir := m.path("cpu", id); dir != "" {
		p, err := readInt(dir, "cpu.cfs_period_us", "")
		if err != nil {
			return r, err
		}
		q, err := readInt(dir, "cpu.cfs_quota_us", "")
		if err != nil {
			return r, err
		}
		s, err := readInt(dir, "cpu.shares", "")
		if err != nil {
			return r, err
		}
		r.CPUPeriod = uint64(p)
		r.CPUQuota = max(q, 0)
		r.CPUWeight = unitsFromShares(uint64(s))
	}
	if dir := m.path("cpuset", id); dir != "" {
		cpus, err := readFile(dir, "cpuset.cpus")
		if err != nil {
			return r, err
		}
		r.CPUs = cpus
	}
	dir := m.path("memory", id)
	mem, err := readInt(dir, "memory.limit_in_bytes", "")
	if err != nil {
		return r, err
	}
	if mem < unlimited64 {
		r.Memory = uint64(mem)
		if exists(dir, "memory.memsw.limit_in_bytes") {
			sw, err := readInt(dir, "memory.memsw.limit_in_bytes", "")
			if err != nil {
				return r, err
			}
			if sw < unlimited64 && sw > mem {
				r.Swap = uint64(sw - mem)
			}
		}
	}
	if dir := m.path("pids", id); dir != "" {
		p, err := readInt(dir, "pids.max", "max")
		if err != nil {
			return r, err
		}
		r.Pids = uint64(max(p, 0))
	}
	if dir := m.path("blkio", id); dir != "" {
		for _, f := range blkioFiles {
			s, err := readFile(dir, f.name)
			if err != nil {
				return r, err
			}
			dev, val, ok := strings.Cut(strings.SplitN(s, "\n", 2)[0], " ")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse %s: %w", filepath.Join(dir, f.name), err)
			}
			r.BlockDevice = dev
			if f.bps {
				r.BPS = n
			} else {
				r.IOPS = n
			}
		}
	}
	if dir := m.path("devices", id); dir != "" {
		list, err := m.readDevices(dir)
		if err != nil {
			return r, err
		}
		for _, s := range list {
			d, err := parseDeviceRule(s)
			if err != nil {
				return r, err
			}
			r.Devices = append(r.Devices, d)
		}
	}
	return r, nil
}

func (m *v1) AddProc(ctx context.Context, id string, pid int) error {
	if err := m.present(id); err != nil {
		return err
	}
	for _, h := range m.hier {
		dir := filepath.Join(h.dir, m.parent, id)
		if err := writeFile(dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

func (m *v1) Procs(ctx context.Context, id string) ([]int, error) {
	if err := m.present(id); err != nil {
		return nil, err
	}
	return m.procs(id)
}

// procs is the union of cgroup.procs over the hierarchies and the child
// cgroups (those a delegated systemd made), sorted.
func (m *v1) procs(id string) ([]int, error) {
	var all []int
	for _, h := range m.hier {
		pids, err := treePids(filepath.Join(h.dir, m.parent, id))
		if err != nil {
			return nil, err
		}
		all = append(all, pids...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func (m *v1) Kill(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	fz := m.path("freezer", id)
	if _, err := os.Stat(fz); errors.Is(err, fs.ErrNotExist) {
		if pids, err := m.procs(id); err != nil || len(pids) == 0 {
			return err
		}
		// Freezer cgroup gone but processes elsewhere: kill unfrozen.
		fz = ""
	}
	k := killer{
		name:  fmt.Sprintf("cgroup %s/%s", m.parent, id),
		procs: func() ([]int, error) { return m.procs(id) },
	}
	if fz != "" {
		k.freeze = func() error { return writeFile(fz, "freezer.state", "FROZEN") }
		k.frozen = func() (bool, error) {
			s, err := readFile(fz, "freezer.state")
			return s == "FROZEN", err
		}
		k.thaw = func() error {
			// Removed meanwhile (its processes gone, another stop's
			// cleanup): nothing is left frozen.
			if err := writeFile(fz, "freezer.state", "THAWED"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
	}
	if err := killCgroup(ctx, k); err != nil {
		return err
	}
	m.log.Debug("cgroup killed", "id", id)
	return nil
}

// v1DelegateFiles are the files of a v1 cgroup that a nested manager
// writes: cgroup.procs and tasks to move processes (systemd moves each
// unit's processes into the unit's child cgroup, and the kernel checks
// write access on the destination's file), cgroup.clone_children and
// notify_on_release, which systemd sets on cgroups it manages. The
// directory itself must be writable to create child cgroups. Limits
// (memory.limit_in_bytes, cpu.*, devices.*, freezer.state, ...) stay
// root's: chowning them would let the container lift its own limits.
// Children the container creates are bounded by these limits anyway (v1
// memory, cpu, pids, blkio and devices are hierarchical). The unified
// (cgroup2) directory of a hybrid host gets v2DelegateFiles.
var v1DelegateFiles = []string{"cgroup.procs", "tasks", "cgroup.clone_children", "notify_on_release"}

// Delegate chowns the container's directory in every hierarchy and the
// files listed in v1DelegateFiles (v2DelegateFiles for the unified
// hierarchy). Note that v1 additionally requires that a non-root writer
// of cgroup.procs have the moved process's uid (or be host root), so a
// container's root can move only its own processes; systemd does so
// before it changes a service's uid.
func (m *v1) Delegate(ctx context.Context, id string, uid, gid int) error {
	if err := m.present(id); err != nil {
		return err
	}
	for _, h := range m.hier {
		files := v1DelegateFiles
		if h.key == "" {
			files = v2DelegateFiles
		}
		if err := chownCgroup(filepath.Join(h.dir, m.parent, id), files, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// chownCgroup chowns dir and those of files that exist in it.
func chownCgroup(dir string, files []string, uid, gid int) error {
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", dir, uid, gid, unwrapPath(err))
	}
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.Chown(p, uid, gid); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // this kernel has no such file
			}
			return fmt.Errorf("chown %s to %d:%d: %w", p, uid, gid, unwrapPath(err))
		}
	}
	return nil
}

func (m *v1) Remove(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	// Fail fast on a populated cgroup instead of retrying rmdir in every
	// hierarchy.
	pids, err := m.procs(id)
	if err != nil {
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("remove cgroup %s/%s: %d processes still inside: %w", m.parent, id, len(pids), syscall.EBUSY)
	}
	var errs []error
	for _, h := range m.hier {
		errs = append(errs, removeTree(filepath.Join(h.dir, m.parent, id)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.log.Debug("cgroup removed", "id", id)
	return nil
}
