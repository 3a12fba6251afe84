package cgroups

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// v2Files are the control files the fake cgroup2 tree gives a container
// cgroup, with the kernel's initial content.
var v2Files = map[string]string{
	"cgroup.procs":           "",
	"cgroup.threads":         "",
	"cgroup.subtree_control": "",
	"cgroup.controllers":     "cpuset cpu io memory pids",
	"cgroup.events":          "populated 0\nfrozen 0",
	"cgroup.freeze":          "0",
	"cgroup.kill":            "",
	"cpu.max":                "max 100000",
	"cpu.weight":             "100",
	"cpuset.cpus":            "",
	"memory.max":             "max",
	"memory.swap.max":        "max",
	"memory.oom.group":       "0",
	"pids.max":               "max",
	"io.max":                 "",
}

// fakeV2 makes a fake cgroup2 root in a temp dir with the parent "vzd"
// and the container "ct" already there (as Create would find them on a
// real host: cgroupfs fills new directories itself, a temp dir does not).
func fakeV2(t *testing.T, drop ...string) (string, Manager) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{root, filepath.Join(root, "vzd")} {
		mkFiles(t, d, map[string]string{
			"cgroup.controllers":     "cpuset cpu io memory hugetlb pids rdma misc",
			"cgroup.subtree_control": "",
			"cgroup.procs":           "",
		})
	}
	files := map[string]string{}
	for k, v := range v2Files {
		if !slices.Contains(drop, k) {
			files[k] = v
		}
	}
	mkFiles(t, filepath.Join(root, "vzd", "ct"), files)
	m, err := NewV2(root, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return root, m
}

func mkFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// render shows the named files of dir as "name: content" lines, the way
// the golden strings below are written.
func render(t *testing.T, dir string, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		s, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(n + ": " + strings.ReplaceAll(string(s), "\n", `\n`) + "\n")
	}
	return b.String()
}

var limitFiles = []string{"cpu.max", "cpu.weight", "cpuset.cpus", "memory.max", "memory.swap.max", "pids.max", "io.max"}

func TestV2CreateEnablesControllers(t *testing.T) {
	root, m := fakeV2(t)
	ctx := ctxT(t)
	if err := m.Create(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	want := "cgroup.subtree_control: +cpu +cpuset +io +memory +pids\n"
	for _, d := range []string{root, filepath.Join(root, "vzd")} {
		if got := render(t, d, "cgroup.subtree_control"); got != want {
			t.Errorf("%s: %s", d, got)
		}
	}
	// The container's own subtree_control is left to its manager.
	if got := render(t, filepath.Join(root, "vzd", "ct"), "cgroup.subtree_control"); got != "cgroup.subtree_control: \n" {
		t.Errorf("container: %s", got)
	}
	// Again: already enabled, nothing written (a write would leave the
	// file holding just the difference).
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("cpuset cpu io memory pids"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if got := render(t, root, "cgroup.subtree_control"); got != "cgroup.subtree_control: cpuset cpu io memory pids\n" {
		t.Errorf("second Create rewrote: %s", got)
	}
	if d := m.Dirs("ct"); len(d) != 1 || d[""] != filepath.Join(root, "vzd", "ct") {
		t.Errorf("Dirs = %v", d)
	}
	if m.Version() != 2 {
		t.Errorf("Version = %d", m.Version())
	}
}

func TestV2Apply(t *testing.T) {
	root, m := fakeV2(t)
	ctx := ctxT(t)
	dir := filepath.Join(root, "vzd", "ct")
	// A stale throttle on an old loop device.
	mkFiles(t, dir, map[string]string{"io.max": "7:9 rbps=1 wbps=1 riops=1 wiops=1\n"})
	r := Resources{
		CPUQuota:    150000,
		CPUWeight:   2000,
		CPUs:        "0-1",
		Memory:      1 << 30,
		Swap:        256 << 20,
		Pids:        300,
		BlockDevice: "7:3",
		IOPS:        500,
		Devices:     []DeviceRule{{Type: 'c', Major: 10, Minor: 229, Access: "rwm"}},
	}
	if err := m.Apply(ctx, "ct", r); err != nil {
		t.Fatal(err)
	}
	const golden = `cpu.max: 150000 100000
cpu.weight: 200
cpuset.cpus: 0-1
memory.max: 1073741824
memory.swap.max: 268435456
pids.max: 300
io.max: 7:3 rbps=max wbps=max riops=500 wiops=500
`
	if got := render(t, dir, limitFiles...); got != golden {
		t.Errorf("after Apply:\n%s\nwant:\n%s", got, golden)
	}
	got, err := m.Read(ctx, "ct")
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(2, r, got); len(d) > 0 {
		t.Errorf("drift: %q (read %+v)", d, got)
	}

	// Clearing writes the kernel's unlimited values and the inherit value
	// of cpuset.cpus.
	if err := m.Apply(ctx, "ct", Resources{}); err != nil {
		t.Fatal(err)
	}
	const cleared = `cpu.max: max 100000
cpu.weight: 100
cpuset.cpus: \n
memory.max: max
memory.swap.max: max
pids.max: max
io.max: 7:3 rbps=max wbps=max riops=max wiops=max
`
	if got := render(t, dir, limitFiles...); got != cleared {
		t.Errorf("after clearing:\n%s\nwant:\n%s", got, cleared)
	}
	// (A real io.max then lists nothing; the fake keeps the last write.)
	mkFiles(t, dir, map[string]string{"io.max": ""})
	got, err = m.Read(ctx, "ct")
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(2, Resources{}, got); len(d) > 0 {
		t.Errorf("drift after clearing: %q (read %+v)", d, got)
	}
}

func TestV2ApplyErrors(t *testing.T) {
	ctx := ctxT(t)
	t.Run("swap not accounted", func(t *testing.T) {
		root, m := fakeV2(t, "memory.swap.max")
		err := m.Apply(ctx, "ct", Resources{Memory: 1 << 20, Swap: 1 << 20, Pids: 9})
		if !errors.Is(err, ErrSwapNotAccounted) {
			t.Fatalf("Apply = %v, want ErrSwapNotAccounted", err)
		}
		// The rest is applied all the same.
		if got := render(t, filepath.Join(root, "vzd", "ct"), "memory.max", "pids.max"); got != "memory.max: 1048576\npids.max: 9\n" {
			t.Errorf("other limits: %s", got)
		}
	})
	t.Run("controller not enabled", func(t *testing.T) {
		_, m := fakeV2(t, "pids.max", "io.max")
		// Unlimited on a missing file is fine: nothing to undo.
		if err := m.Apply(ctx, "ct", Resources{}); err != nil {
			t.Errorf("Apply unlimited: %v", err)
		}
		err := m.Apply(ctx, "ct", Resources{Pids: 5})
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `write "5" to `) || !strings.Contains(err.Error(), "pids.max") {
			t.Errorf("Apply pids without the controller = %v", err)
		}
	})
	t.Run("absent cgroup", func(t *testing.T) {
		_, m := fakeV2(t)
		if err := m.Apply(ctx, "nope", Resources{}); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Apply = %v", err)
		}
		if _, err := m.Read(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Read = %v", err)
		}
		if _, err := m.Procs(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Procs = %v", err)
		}
		if err := m.Kill(ctx, "nope"); err != nil {
			t.Errorf("Kill = %v", err)
		}
		if err := m.Remove(ctx, "nope"); err != nil {
			t.Errorf("Remove = %v", err)
		}
		if err := m.Create(ctx, "a/b"); err == nil {
			t.Error("Create a/b: no error")
		}
	})
	t.Run("not a cgroup2 root", func(t *testing.T) {
		if _, err := NewV2(t.TempDir(), "", nil); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("NewV2 = %v", err)
		}
		if _, err := NewV2(t.TempDir(), "../x", nil); err == nil {
			t.Error("NewV2 parent ../x: no error")
		}
	})
}

func TestV2ProcsKill(t *testing.T) {
	root, m := fakeV2(t)
	ctx := ctxT(t)
	dir := filepath.Join(root, "vzd", "ct")
	mkFiles(t, filepath.Join(dir, "init.scope"), map[string]string{"cgroup.procs": "56\n"})
	mkFiles(t, dir, map[string]string{"cgroup.procs": "34\n12\n"})
	pids, err := m.Procs(ctx, "ct")
	if err != nil || !slices.Equal(pids, []int{12, 34, 56}) {
		t.Errorf("Procs = %v, %v", pids, err)
	}
	// Kill with cgroup.kill: one write, then the (fake, emptied) wait.
	mkFiles(t, dir, map[string]string{"cgroup.procs": ""})
	mkFiles(t, filepath.Join(dir, "init.scope"), map[string]string{"cgroup.procs": ""})
	if err := m.Kill(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if got := render(t, dir, "cgroup.kill", "cgroup.freeze"); got != "cgroup.kill: 1\ncgroup.freeze: 0\n" {
		t.Errorf("after Kill: %s", got)
	}

	// Without cgroup.kill (before 5.14): freeze, signal, thaw.
	root, m = fakeV2(t, "cgroup.kill")
	dir = filepath.Join(root, "vzd", "ct")
	mkFiles(t, dir, map[string]string{"cgroup.events": "populated 0\nfrozen 1\n"})
	if err := m.Kill(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if got := render(t, dir, "cgroup.freeze"); got != "cgroup.freeze: 0\n" {
		t.Errorf("after Kill: %s (left frozen?)", got)
	}
}

func TestV2Delegate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root") // pure test; runs wherever it can
	}
	root, m := fakeV2(t)
	const uid, gid = 200000, 200000
	if err := m.Delegate(ctxT(t), "ct", uid, gid); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "vzd", "ct")
	for _, f := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "memory.oom.group"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != uid || s.Gid != gid {
			t.Errorf("%s owned by %d:%d", f, s.Uid, s.Gid)
		}
	}
	for _, f := range []string{"memory.max", "cpu.max", "cgroup.kill", "cgroup.freeze"} {
		st, _ := os.Stat(filepath.Join(dir, f))
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 0 {
			t.Errorf("%s delegated, must stay root's", f)
		}
	}
}

func TestV2Remove(t *testing.T) {
	// Only empty directories: rmdir on cgroupfs takes the control files
	// with it, on a temp dir it could not.
	root := t.TempDir()
	mkFiles(t, root, map[string]string{"cgroup.controllers": ""})
	for _, d := range []string{"vzd/ct/init.scope", "vzd/ct/system.slice/a.service", "vzd/other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewV2(root, "vzd", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctxT(t), "ct"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "vzd", "ct")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ct still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "vzd", "other")); err != nil {
		t.Errorf("sibling removed: %v", err)
	}
}
