package cgroups

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vzd/internal/testutil"
)

var allV1 = []string{"cpu", "cpuacct", "cpuset", "memory", "blkio", "pids", "devices", "freezer"}

// newV1Test returns a v1 driver with a parent of its own and a created
// container cgroup; Cleanup kills, removes, and removes the parent.
func newV1Test(t *testing.T) (Manager, string) {
	t.Helper()
	testutil.RequireCgroupV1(t, allV1...)
	parent := "vzdtest-" + testutil.UniqueName("cg")
	m, err := NewV1("", parent, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	id := "ct1"
	t.Cleanup(func() {
		ctx := ctxT(t)
		if err := m.Kill(ctx, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := m.Remove(ctx, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, d := range parentDirs(m.Dirs(id)) {
			if err := removeTree(d); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	if err := m.Create(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	return m, id
}

func readT(t *testing.T, dir, name string) string {
	t.Helper()
	s, err := readFile(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestV1CreateApplyRead(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dirs := m.Dirs(id)
	for _, c := range append(allV1, "name=systemd") {
		if _, err := os.Stat(dirs[c]); err != nil {
			t.Errorf("hierarchy %s: %v", c, err)
		}
	}
	if m.Version() != 1 {
		t.Errorf("Version = %d", m.Version())
	}
	// cpuset must be usable at once: copied from the parent.
	if got, want := readT(t, dirs["cpuset"], "cpuset.cpus"), readT(t, "/sys/fs/cgroup/cpuset", "cpuset.cpus"); got != want {
		t.Errorf("cpuset.cpus = %q, want the root's %q", got, want)
	}
	// Create again: idempotent.
	if err := m.Create(ctx, id); err != nil {
		t.Fatalf("second Create: %v", err)
	}

	want := Resources{
		CPUPeriod: 100000,
		CPUQuota:  150000,
		CPUWeight: 500,
		CPUs:      "0",
		Memory:    256 << 20,
		Swap:      128 << 20,
		Pids:      100,
		Devices:   []DeviceRule{{Type: 'c', Major: 10, Minor: 229, Access: "rw"}},
	}
	if err := m.Apply(ctx, id, want); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ ctrl, file, want string }{
		{"cpu", "cpu.cfs_quota_us", "150000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"cpu", "cpu.shares", "512"},
		{"cpuset", "cpuset.cpus", "0"},
		{"memory", "memory.limit_in_bytes", strconv.Itoa(256 << 20)},
		{"memory", "memory.memsw.limit_in_bytes", strconv.Itoa(384 << 20)},
		{"pids", "pids.max", "100"},
	}
	for _, c := range checks {
		if got := readT(t, dirs[c.ctrl], c.file); got != c.want {
			t.Errorf("%s = %q, want %q", c.file, got, c.want)
		}
	}
	list := strings.Split(readT(t, dirs["devices"], "devices.list"), "\n")
	wantList := deviceList(want.Devices)
	if !sameSet(list, wantList) {
		t.Errorf("devices.list = %q, want %q", list, wantList)
	}
	got, err := m.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(1, want, got); len(d) > 0 {
		t.Errorf("drift after Apply: %q\nread %+v", d, got)
	}
	// Apply twice: no change, no error.
	if err := m.Apply(ctx, id, want); err != nil {
		t.Fatalf("second Apply: %v", err)
	}

	// Lift every limit: the kernel's unlimited values come back.
	if err := m.Apply(ctx, id, Resources{}); err != nil {
		t.Fatal(err)
	}
	got, err = m.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(1, Resources{}, got); len(d) > 0 {
		t.Errorf("drift after clearing: %q", d)
	}
	if s := readT(t, dirs["cpu"], "cpu.cfs_quota_us"); s != "-1" {
		t.Errorf("quota after clearing = %s", s)
	}
	if s := readT(t, dirs["pids"], "pids.max"); s != "max" {
		t.Errorf("pids.max after clearing = %s", s)
	}
	// Drift sees a change made behind the driver's back.
	if err := writeFile(dirs["pids"], "pids.max", "7"); err != nil {
		t.Fatal(err)
	}
	got, _ = m.Read(ctx, id)
	if d := Drift(1, Resources{}, got); len(d) != 1 || !strings.HasPrefix(d[0], "pids") {
		t.Errorf("drift after a foreign write = %q", d)
	}
}

func TestV1Absent(t *testing.T) {
	testutil.RequireCgroupV1(t, allV1...)
	m, err := NewV1("", "vzdtest-"+testutil.UniqueName("ab"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := m.Remove(ctx, "nope"); err != nil {
		t.Errorf("Remove absent: %v", err)
	}
	if err := m.Kill(ctx, "nope"); err != nil {
		t.Errorf("Kill absent: %v", err)
	}
	if err := m.Apply(ctx, "nope", Resources{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Apply absent = %v, want ErrNotExist", err)
	}
	if _, err := m.Read(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read absent = %v, want ErrNotExist", err)
	}
	if _, err := m.Procs(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Procs absent = %v, want ErrNotExist", err)
	}
	if err := m.Create(ctx, "../x"); err == nil {
		t.Error("Create ../x: no error")
	}
}

func TestV1ProcessLiveKillRemove(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dirs := m.Dirs(id)
	h := startHelper(t, "", "sleep", "60")
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	pids, err := m.Procs(ctx, id)
	if err != nil || !slices.Equal(pids, []int{h.pid()}) {
		t.Fatalf("Procs = %v, %v; want [%d]", pids, err, h.pid())
	}
	for key, dir := range dirs {
		if s := readT(t, dir, "cgroup.procs"); s != strconv.Itoa(h.pid()) {
			t.Errorf("%s cgroup.procs = %q", key, s)
		}
	}
	// Limits change live with a process inside.
	for _, r := range []Resources{
		{Memory: 64 << 20, Pids: 10, CPUQuota: 50000},
		{Memory: 32 << 20, Swap: 1 << 20, Pids: 5, CPUQuota: 20000, CPUWeight: 2000},
		{Memory: 128 << 20, Swap: 64 << 20, Pids: 50, CPUQuota: 200000},
	} {
		if err := m.Apply(ctx, id, r); err != nil {
			t.Fatalf("Apply %+v: %v", r, err)
		}
		got, err := m.Read(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := Drift(1, r, got); len(d) > 0 {
			t.Errorf("live change to %+v: drift %q", r, d)
		}
	}
	// Remove refuses a populated cgroup.
	if err := m.Remove(ctx, id); err == nil || !errors.Is(err, unix.EBUSY) {
		t.Errorf("Remove with a process inside = %v, want EBUSY", err)
	}
	if err := m.Kill(ctx, id); err != nil {
		t.Fatal(err)
	}
	werr := h.wait(t, 10*time.Second)
	if ws, ok := exitSignal(werr); !ok || ws != syscall.SIGKILL {
		t.Errorf("sleep ended with %v, want SIGKILL", werr)
	}
	if pids, err := m.Procs(ctx, id); err != nil || len(pids) != 0 {
		t.Errorf("Procs after Kill = %v, %v", pids, err)
	}
	if s := readT(t, dirs["freezer"], "freezer.state"); s != "THAWED" {
		t.Errorf("freezer.state after Kill = %s", s)
	}
	// A child cgroup (as a delegated systemd makes) goes too.
	if err := os.Mkdir(filepath.Join(dirs["name=systemd"], "init.scope"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if left := listDirs(dirs); len(left) > 0 {
		t.Errorf("left after Remove: %v", left)
	}
	if err := m.Remove(ctx, id); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func exitSignal(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}
