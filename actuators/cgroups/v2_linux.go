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

// v2Controllers are the controllers the v2 driver enables for container
// cgroups, where the parent offers them.
var v2Controllers = []string{"cpu", "cpuset", "io", "memory", "pids"}

// v2DelegateFiles are the files of a cgroup2 directory a nested manager
// writes, the list the kernel itself publishes in /sys/kernel/cgroup/
// delegate (6.x): moving processes and threads, enabling controllers for
// its children, and the OOM group and proactive reclaim of its own
// cgroup. Limits such as memory.max stay root's.
var v2DelegateFiles = []string{"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "memory.oom.group", "memory.reclaim"}

type v2 struct {
	root, parent string
	log          *slog.Logger
}

// NewV2 returns the driver for the cgroup2 hierarchy mounted at root
// (DefaultRoot when ""), with container cgroups at <root>/<parent>/<id>
// (parent DefaultParent when "").
func NewV2(root, parent string, log *slog.Logger) (Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	if parent == "" {
		parent = DefaultParent
	}
	if err := checkParent(parent); err != nil {
		return nil, err
	}
	if !exists(root, "cgroup.controllers") {
		return nil, fmt.Errorf("cgroup2 at %s: no cgroup.controllers: %w", root, fs.ErrNotExist)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Debug("cgroup v2 driver", "root", root, "parent", parent)
	return &v2{root: root, parent: parent, log: log}, nil
}

func (m *v2) Version() int { return 2 }

func (m *v2) dir(id string) string { return filepath.Join(m.root, m.parent, id) }

func (m *v2) Dirs(id string) map[string]string { return map[string]string{"": m.dir(id)} }

// Create makes the parent levels and the container's cgroup, enabling the
// controllers of v2Controllers (those each level offers) in the
// cgroup.subtree_control of the root and of every level down to the
// parent, so that the container's cgroup gets their files. The
// container's own subtree_control is left to whoever manages its subtree
// (systemd inside, after Delegate).
func (m *v2) Create(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	dir := m.root
	for _, part := range strings.Split(filepath.Clean(m.parent), string(filepath.Separator)) {
		if err := enableControllers(dir); err != nil {
			return err
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, unwrapPath(err))
		}
	}
	if err := enableControllers(dir); err != nil {
		return err
	}
	dir = m.dir(id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", dir, unwrapPath(err))
	}
	m.log.Debug("cgroup created", "id", id)
	return nil
}

// enableControllers enables in dir's subtree_control those of
// v2Controllers that dir offers and that are not enabled yet. It writes
// them in one line: the kernel applies all or none.
func enableControllers(dir string) error {
	avail, err := readFile(dir, "cgroup.controllers")
	if err != nil {
		return err
	}
	on, err := readFile(dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	enabled := map[string]bool{}
	for _, c := range strings.Fields(on) {
		enabled[strings.TrimPrefix(c, "+")] = true
	}
	var add []string
	for _, c := range v2Controllers {
		if slices.Contains(strings.Fields(avail), c) && !enabled[c] {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(dir, "cgroup.subtree_control", strings.Join(add, " "))
}

func (m *v2) present(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	dir := m.dir(id)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("cgroup %s: %w", dir, unwrapPath(err))
	}
	return dir, nil
}

// writeLimit writes value to a limit file. When the file is missing (the
// controller is not enabled for this cgroup) and value is the unlimited
// default, there is nothing to undo, so it is not an error; a real limit
// on a missing file is.
func writeLimit(dir, name, value string, isDefault bool) error {
	if isDefault && !exists(dir, name) {
		return nil
	}
	return writeFile(dir, name, value)
}

func maxOr(v uint64) string {
	if v == 0 {
		return "max"
	}
	return strconv.FormatUint(v, 10)
}

func (m *v2) Apply(ctx context.Context, id string, r Resources) error {
	dir, err := m.present(id)
	if err != nil {
		return err
	}
	period := r.CPUPeriod
	if period == 0 {
		period = DefaultCPUPeriod
	}
	quota := "max"
	if r.CPUQuota > 0 {
		quota = strconv.FormatInt(r.CPUQuota, 10)
	}
	w := weightFromUnits(r.CPUWeight)
	// An empty cpuset.cpus means "the parent's" on v2; a bare newline is
	// the empty write the kernel parses (it strips whitespace).
	cpus := r.CPUs
	if cpus == "" {
		cpus = "\n"
	}
	swap := "max"
	if r.Memory > 0 && r.Swap > 0 {
		swap = strconv.FormatUint(r.Swap, 10) // v2 swap.max is swap alone, as Resources.Swap
	}
	errs := []error{
		writeLimit(dir, "cpu.max", quota+" "+strconv.FormatUint(period, 10), r.CPUQuota == 0),
		writeLimit(dir, "cpu.weight", strconv.FormatUint(w, 10), w == 100),
		writeLimit(dir, "cpuset.cpus", cpus, r.CPUs == ""),
		writeLimit(dir, "memory.max", maxOr(r.Memory), r.Memory == 0),
		writeLimit(dir, "pids.max", maxOr(r.Pids), r.Pids == 0),
		m.applyIO(dir, r),
	}
	if exists(dir, "memory.swap.max") {
		errs = append(errs, writeFile(dir, "memory.swap.max", swap))
	} else if swap != "max" {
		errs = append(errs, fmt.Errorf("swap limit of %s: %w", dir, ErrSwapNotAccounted))
	}
	return errors.Join(errs...)
}

// applyIO throttles r.BlockDevice in io.max and lifts the throttle of any
// other device listed there.
func (m *v2) applyIO(dir string, r Resources) error {
	limited := r.BlockDevice != "" && (r.IOPS != 0 || r.BPS != 0)
	if !exists(dir, "io.max") {
		if limited {
			return writeFile(dir, "io.max", "") // the error names the missing file
		}
		return nil
	}
	cur, err := readFile(dir, "io.max")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(cur, "\n") {
		dev, _, _ := strings.Cut(line, " ")
		if dev != "" && dev != r.BlockDevice {
			if err := writeFile(dir, "io.max", dev+" rbps=max wbps=max riops=max wiops=max"); err != nil {
				return err
			}
		}
	}
	if r.BlockDevice == "" {
		return nil
	}
	v := fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", r.BlockDevice,
		maxOr(r.BPS), maxOr(r.BPS), maxOr(r.IOPS), maxOr(r.IOPS))
	return writeFile(dir, "io.max", v)
}

func (m *v2) Read(ctx context.Context, id string) (Resources, error) {
	var r Resources
	dir, err := m.present(id)
	if err != nil {
		return r, err
	}
	if exists(dir, "cpu.max") {
		s, err := readFile(dir, "cpu.max")
		if err != nil {
			return r, err
		}
		q, p, _ := strings.Cut(s, " ")
		if r.CPUPeriod, err = strconv.ParseUint(p, 10, 64); err != nil {
			return r, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cpu.max"), err)
		}
		if q != "max" {
			if r.CPUQuota, err = strconv.ParseInt(q, 10, 64); err != nil {
				return r, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cpu.max"), err)
			}
		}
	}
	if exists(dir, "cpu.weight") {
		w, err := readInt(dir, "cpu.weight", "")
		if err != nil {
			return r, err
		}
		r.CPUWeight = unitsFromWeight(uint64(w))
	}
	if exists(dir, "cpuset.cpus") {
		if r.CPUs, err = readFile(dir, "cpuset.cpus"); err != nil {
			return r, err
		}
	}
	read := func(name string, into *uint64) error {
		if !exists(dir, name) {
			return nil
		}
		n, err := readInt(dir, name, "max")
		if err == nil && n > 0 {
			*into = uint64(n)
		}
		return err
	}
	if err := errors.Join(read("memory.max", &r.Memory), read("memory.swap.max", &r.Swap), read("pids.max", &r.Pids)); err != nil {
		return r, err
	}
	if exists(dir, "io.max") {
		s, err := readFile(dir, "io.max")
		if err != nil {
			return r, err
		}
		f := strings.Fields(strings.SplitN(s, "\n", 2)[0])
		if len(f) > 0 {
			r.BlockDevice = f[0]
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseUint(v, 10, 64) // "max" reads as 0, unlimited
				switch k {
				case "riops":
					r.IOPS = n
				case "rbps":
					r.BPS = n
				}
			}
		}
	}
	return r, nil
}

func (m *v2) AddProc(ctx context.Context, id string, pid int) error {
	dir, err := m.present(id)
	if err != nil {
		return err
	}
	return writeFile(dir, "cgroup.procs", strconv.Itoa(pid))
}

func (m *v2) Procs(ctx context.Context, id string) ([]int, error) {
	if _, err := m.present(id); err != nil {
		return nil, err
	}
	return m.procs(m.dir(id))
}

// procs lists the pids of the cgroup and its children: on v2 a process is
// in exactly one leaf, and a delegated container's processes live in the
// children its own manager made.
func (m *v2) procs(dir string) ([]int, error) {
	all, err := treePids(dir)
	if err != nil {
		return nil, err
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func (m *v2) Kill(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	dir := m.dir(id)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	k := killer{
		name:  "cgroup " + dir,
		procs: func() ([]int, error) { return m.procs(dir) },
		kill: func() (bool, error) {
			// cgroup.kill (5.14+) kills the whole subtree atomically,
			// forks in flight included.
			if !exists(dir, "cgroup.kill") {
				return false, nil
			}
			return true, writeFile(dir, "cgroup.kill", "1")
		},
	}
	if exists(dir, "cgroup.freeze") {
		k.freeze = func() error { return writeFile(dir, "cgroup.freeze", "1") }
		k.frozen = func() (bool, error) {
			s, err := readFile(dir, "cgroup.events")
			return slices.Contains(strings.Split(s, "\n"), "frozen 1"), err
		}
		k.thaw = func() error { return writeFile(dir, "cgroup.freeze", "0") }
	}
	if err := killCgroup(ctx, k); err != nil {
		return err
	}
	m.log.Debug("cgroup killed", "id", id)
	return nil
}

// Delegate chowns the container's cgroup directory and v2DelegateFiles.
// With them a nested manager can create children, move processes among
// them (v2 checks write access on the common ancestor's cgroup.procs,
// which is the container's own), and enable controllers for them.
func (m *v2) Delegate(ctx context.Context, id string, uid, gid int) error {
	dir, err := m.present(id)
	if err != nil {
		return err
	}
	return chownCgroup(dir, v2DelegateFiles, uid, gid)
}

func (m *v2) Remove(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	pids, err := m.procs(m.dir(id))
	if err != nil {
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("remove cgroup %s: %d processes still inside: %w", m.dir(id), len(pids), syscall.EBUSY)
	}
	if err := removeTree(m.dir(id)); err != nil {
		return err
	}
	m.log.Debug("cgroup removed", "id", id)
	return nil
}
