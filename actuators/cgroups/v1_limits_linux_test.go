package cgroups

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vzd/internal/testutil"
)

// fieldOf returns the value of key in a "key value" per line file.
func fieldOf(t *testing.T, dir, file, key string) int64 {
	t.Helper()
	for _, line := range strings.Split(readT(t, dir, file), "\n") {
		k, v, _ := strings.Cut(line, " ")
		if k == key {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s has no %s", file, key)
	return 0
}

func TestV1MemoryHogIsOOMKilled(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dir := m.Dirs(id)["memory"]
	if err := m.Apply(ctx, id, Resources{Memory: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "hog")
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	h.send(t, "go")
	err := h.wait(t, 20*time.Second)
	if sig, ok := exitSignal(err); !ok || sig != syscall.SIGKILL {
		t.Fatalf("hog of 200 MiB under a 64 MiB limit ended with %v, want SIGKILL by the OOM killer", err)
	}
	if n := fieldOf(t, dir, "memory.oom_control", "oom_kill"); n < 1 {
		t.Errorf("memory.oom_control oom_kill = %d, want >= 1", n)
	}
	if s := readT(t, dir, "memory.failcnt"); s == "0" {
		t.Errorf("memory.failcnt = 0, want > 0")
	}
	// The kernel may overshoot by a page or so while it reclaims; 1 MiB
	// of slack still tells a limit from none (the hog wanted 200 MiB).
	if peak, _ := strconv.ParseUint(readT(t, dir, "memory.max_usage_in_bytes"), 10, 64); peak > 65<<20 {
		t.Errorf("max usage %d above the 64 MiB limit", peak)
	}
}

func TestV1CPUBurnerHeldToLimit(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dir := m.Dirs(id)["cpuacct"]
	// A fifth of a CPU, while the burner spins on every CPU (a limit low
	// enough to bite even when other work on the machine takes its share).
	if err := m.Apply(ctx, id, Resources{CPUQuota: 20000}); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "burn")
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	usage := func() float64 {
		n, err := strconv.ParseUint(readT(t, dir, "cpuacct.usage"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return float64(n)
	}
	h.send(t, "go")
	u0, t0 := usage(), time.Now()
	time.Sleep(2 * time.Second)
	u1, t1 := usage(), time.Now()
	cpus := (u1 - u0) / float64(t1.Sub(t0).Nanoseconds())
	throttled := fieldOf(t, m.Dirs(id)["cpu"], "cpu.stat", "nr_throttled")
	t.Logf("burner used %.2f CPUs under a 0.2 CPU limit (%d CPUs), throttled %d times", cpus, runtime.NumCPU(), throttled)
	// Wide tolerance: CFS lets a period's quota overrun a little. The
	// machine is shared, so there is no lower bound beyond "it ran"
	// (nor a check of nr_throttled: under load it may never reach 0.5).
	if cpus > 0.2*1.5 {
		t.Errorf("burner used %.2f CPUs, limit 0.2", cpus)
	}
	if cpus > 0.15 && throttled == 0 {
		t.Errorf("burner ran at the limit but was never throttled")
	}
	if u1 == u0 {
		t.Errorf("burner used no CPU time in the cgroup")
	}
	h.wait(t, 10*time.Second)
}

func TestV1PidsLimitStopsForkBomb(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dir := m.Dirs(id)["pids"]
	const limit = 8
	if err := m.Apply(ctx, id, Resources{Pids: limit}); err != nil {
		t.Fatal(err)
	}
	// The shell's orphans (dash exits when a fork fails) come back to us
	// as their subreaper, so none is left unreaped.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	// 40 forks at most: bounded even if the limit failed.
	h := startHelper(t, "", "sh", "-c", `read x; i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo forked; wait`)
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	h.send(t, "go")
	// Either the shell fails a fork and exits, or it forked all 40 and
	// waits: give it time to get there.
	select {
	case <-h.done:
	case <-time.After(3 * time.Second):
	}
	pids, err := m.Procs(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > limit {
		t.Errorf("%d processes in the cgroup, limit %d", len(pids), limit)
	}
	if n := fieldOf(t, dir, "pids.events", "max"); n < 1 {
		t.Errorf("pids.events max = %d, want forks refused", n)
	}
	if err := m.Kill(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if pid != h.pid() {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, 0, nil) // our orphan now; ECHILD if not
		}
	}
	if pids, err := m.Procs(ctx, id); err != nil || len(pids) != 0 {
		t.Errorf("Procs after Kill = %v, %v", pids, err)
	}
}

func TestV1DevicesLive(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	if err := m.Apply(ctx, id, Resources{}); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "open")
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	open := func(path string) string {
		h.send(t, path)
		return h.line(t)
	}
	// /dev/kmsg (c 1:11) is not in the default list; opening it read-only
	// is harmless on the host.
	if s := open("/dev/null"); s != "ok" {
		t.Errorf("open /dev/null: %s", s)
	}
	if s := open("/dev/kmsg"); !strings.Contains(s, "operation not permitted") {
		t.Errorf("open /dev/kmsg with the default list: %s, want EPERM", s)
	}
	kmsg := DeviceRule{Type: 'c', Major: 1, Minor: 11, Access: "r"}
	if err := m.Apply(ctx, id, Resources{Devices: []DeviceRule{kmsg}}); err != nil {
		t.Fatal(err)
	}
	if s := open("/dev/kmsg"); s != "ok" {
		t.Errorf("open /dev/kmsg after allowing it live: %s", s)
	}
	if err := m.Apply(ctx, id, Resources{}); err != nil {
		t.Fatal(err)
	}
	if s := open("/dev/kmsg"); !strings.Contains(s, "operation not permitted") {
		t.Errorf("open /dev/kmsg after denying it live: %s", s)
	}
	if s := open("/dev/null"); s != "ok" {
		t.Errorf("open /dev/null after the changes: %s", s)
	}
	got, err := m.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(1, Resources{}, got); len(d) > 0 {
		t.Errorf("drift: %q", d)
	}
}

// loopDev attaches a small image and returns its "maj:min".
func loopDev(t *testing.T) string {
	t.Helper()
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "losetup")
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(context.Background(), "losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(int(unix.Major(st.Rdev))) + ":" + strconv.Itoa(int(unix.Minor(st.Rdev)))
}

func TestV1BlkioThrottle(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	dev := loopDev(t)
	dir := m.Dirs(id)["blkio"]
	r := Resources{BlockDevice: dev, IOPS: 200, BPS: 10 << 20}
	if err := m.Apply(ctx, id, r); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"blkio.throttle.read_iops_device":  dev + " 200",
		"blkio.throttle.write_iops_device": dev + " 200",
		"blkio.throttle.read_bps_device":   dev + " " + strconv.Itoa(10<<20),
		"blkio.throttle.write_bps_device":  dev + " " + strconv.Itoa(10<<20),
	} {
		if got := readT(t, dir, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	got, err := m.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d := Drift(1, r, got); len(d) > 0 {
		t.Errorf("drift: %q", d)
	}
	// IOPS only: the bytes/s rules go.
	r = Resources{BlockDevice: dev, IOPS: 100}
	if err := m.Apply(ctx, id, r); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Read(ctx, id); err != nil || len(Drift(1, r, got)) > 0 {
		t.Errorf("IOPS only: read %+v, %v", got, err)
	}
	if s := readT(t, dir, "blkio.throttle.read_bps_device"); s != "" {
		t.Errorf("read_bps_device with BPS 0 = %q", s)
	}
	// Clearing the device removes the rules.
	if err := m.Apply(ctx, id, Resources{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range blkioFiles {
		if s := readT(t, dir, f.name); s != "" {
			t.Errorf("%s after clearing = %q", f.name, s)
		}
	}
}

func TestV1Delegate(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	const uid, gid = 100000, 100000
	if err := m.Delegate(ctx, id, uid, gid); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (uint32, uint32) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, st.Gid
	}
	for key, dir := range m.Dirs(id) {
		files := []string{"", "cgroup.procs"}
		if key != "" {
			files = append(files, "tasks")
		} else {
			files = append(files, "cgroup.subtree_control")
		}
		for _, f := range files {
			if u, g := owner(filepath.Join(dir, f)); u != uid || g != gid {
				t.Errorf("%s/%s owned by %d:%d", dir, f, u, g)
			}
		}
	}
	// Limits stay root's.
	for key, f := range map[string]string{"memory": "memory.limit_in_bytes", "pids": "pids.max", "freezer": "freezer.state", "devices": "devices.allow"} {
		if u, _ := owner(filepath.Join(m.Dirs(id)[key], f)); u != 0 {
			t.Errorf("%s owned by %d, want root", f, u)
		}
	}
	// The delegate can make a child cgroup as its own uid.
	cmd := exec.Command("mkdir", filepath.Join(m.Dirs(id)["name=systemd"], "init.scope"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("mkdir as the delegate: %v: %s", err, out)
	}
	// Another uid cannot.
	cmd = exec.Command("mkdir", filepath.Join(m.Dirs(id)["name=systemd"], "other"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid + 1, Gid: gid + 1}}
	if err := cmd.Run(); err == nil {
		t.Errorf("mkdir as another uid succeeded")
	}
}

// TestV1ApplyAfterFailedApply: a RAM limit below what the container uses
// is refused by the kernel (it cannot reclaim anonymous memory without
// swap); the error names the file and value, the other limits are applied
// all the same, and a later Apply with a sane value succeeds.
func TestV1ApplyAfterFailedApply(t *testing.T) {
	m, id := newV1Test(t)
	ctx := ctxT(t)
	h := startHelper(t, "hold")
	if err := m.AddProc(ctx, id, h.pid()); err != nil {
		t.Fatal(err)
	}
	h.send(t, "go")
	if s := h.line(t); s != "ready" {
		t.Fatalf("helper said %q", s)
	}
	dir := m.Dirs(id)["memory"]
	err := m.Apply(ctx, id, Resources{Memory: 8 << 20, Pids: 77})
	if err == nil {
		t.Fatalf("kernel accepted a RAM limit below usage (%s bytes used)", readT(t, dir, "memory.usage_in_bytes"))
	}
	if !strings.Contains(err.Error(), `write "8388608" to `+filepath.Join(dir, "memory.limit_in_bytes")) {
		t.Errorf("error does not name value and file: %v", err)
	}
	if s := readT(t, m.Dirs(id)["pids"], "pids.max"); s != "77" {
		t.Errorf("pids.max = %s after a failed RAM limit, want 77", s)
	}
	if err := m.Apply(ctx, id, Resources{Memory: 256 << 20, Pids: 77}); err != nil {
		t.Errorf("Apply after the failure: %v", err)
	}
}

// TestV1KillCancelled: a Kill whose ctx has ended stops waiting but never
// leaves the cgroup frozen; a later Kill finishes the job.
func TestV1KillCancelled(t *testing.T) {
	m, id := newV1Test(t)
	h := startHelper(t, "", "sleep", "60")
	if err := m.AddProc(ctxT(t), id, h.pid()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// The signal may or may not go out before the wait notices ctx;
	// either way the freezer must be thawed.
	_ = m.Kill(ctx, id)
	if s := readT(t, m.Dirs(id)["freezer"], "freezer.state"); s != "THAWED" {
		t.Errorf("freezer.state after a cancelled Kill = %s", s)
	}
	if err := m.Kill(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	if sig, ok := exitSignal(h.wait(t, 10*time.Second)); !ok || sig != syscall.SIGKILL {
		t.Error("sleep not killed")
	}
}
