package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vzd/actuators/cgroups"
	"vzd/internal/testutil"
	"vzd/spec"
)

// The test binary is also the supervisor, the init stage and the exec
// helper (Main), and a throwaway agent for the adoption test.
func TestMain(m *testing.M) {
	if Main() {
		return
	}
	if v := os.Getenv("VZD_BENCH"); v != "" {
		os.Exit(benchMain(v))
	}
	if v := os.Getenv("VZD_TEST_AGENT"); v != "" {
		os.Exit(testAgent(v))
	}
	os.Exit(m.Run())
}

type agentJob struct {
	Parent     string
	Prefix     string
	Containers []*spec.Container
}

// testAgent starts the containers of job, prints "started", and waits to
// be killed.
func testAgent(job string) int {
	var j agentJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Println(err)
		return 1
	}
	cg, err := cgroups.NewV1("", j.Parent, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	r, err := New(Config{Paths: spec.Paths{Prefix: j.Prefix}, Cgroups: cg})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for _, c := range j.Containers {
		if err := r.Start(context.Background(), c); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	fmt.Println("started")
	select {}
}

type env struct {
	t      *testing.T
	parent string
	prefix string
	cg     cgroups.Manager
	r      *Runtime
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newEnv(t *testing.T) *env {
	testutil.RequireCgroupV1(t, "memory", "pids", "freezer")
	parent := testutil.UniqueName("vzt")
	cg, err := cgroups.NewV1("", parent, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	r, err := New(Config{Paths: spec.Paths{Prefix: prefix}, Cgroups: cg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, parent: parent, prefix: prefix, cg: cg, r: r}
	t.Cleanup(func() {
		// Container cleanups (registered later) have run: the parent
		// cgroups are empty.
		for _, d := range cg.Dirs("x") {
			os.Remove(filepath.Dir(d))
		}
	})
	return e
}

// container makes a busybox container with its root on a fresh tmpfs.
func (e *env) container(privileged bool) *spec.Container {
	t := e.t
	id := testutil.UniqueName("ct")
	root := filepath.Join(e.prefix, "vz/root", id)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=64m,mode=755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	testutil.BusyboxRoot(t, root)
	c := &spec.Container{
		ID:          id,
		Hostname:    "host-" + id,
		Privileged:  privileged,
		State:       spec.StateRunning,
		StopTimeout: 20 * time.Second,
		Init:        []string{spec.DefaultInit},
		Root:        root,
		Private:     filepath.Join(e.prefix, "vz/private", id),
	}
	if err := os.MkdirAll(c.Private, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.r.Stop(ctx, c); err != nil {
			t.Errorf("stop %s: %v", id, err)
		}
		if err := e.cg.Remove(ctx, id); err != nil {
			t.Errorf("remove cgroup %s: %v", id, err)
		}
	})
	return c
}

func (e *env) start(c *spec.Container) Status {
	e.t.Helper()
	ctx := context.Background()
	if err := e.r.Start(ctx, c); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	st, err := e.r.Status(ctx, c)
	if err != nil || !st.Running {
		e.t.Fatalf("status after start: %+v, %v", st, err)
	}
	return st
}

// sh runs a shell command in the container and returns its output and
// exit code.
func (e *env) sh(c *spec.Container, script string) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	code, err := e.r.Exec(ctx, c, []string{"/bin/sh", "-c", script}, nil, &out, &out, false)
	if err != nil {
		e.t.Fatalf("exec %q: %v", script, err)
	}
	return strings.TrimSpace(out.String()), code
}

func (e *env) mustSh(c *spec.Container, script string) string {
	e.t.Helper()
	out, code := e.sh(c, script)
	if code != 0 {
		e.t.Fatalf("%q: exit %d: %s", script, code, out)
	}
	return out
}

func (e *env) mustFail(c *spec.Container, what, script string) {
	e.t.Helper()
	out, code := e.sh(c, script)
	if code == 0 {
		e.t.Errorf("%s: %q succeeded: %s", what, script, out)
	}
}

// waitFor polls cond for up to d (bounded; not a timing assertion).
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestBusyboxBootUnprivileged(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	c.Sysctl = map[string]string{"net.ipv4.ip_forward": "1", "kernel.msgmax": "12345"}
	st := e.start(c)
	if got := e.mustSh(c, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax"); got != "1\n12345" {
		t.Errorf("namespaced sysctls from the spec: %q", got)
	}
	if st.UIDBase < firstBase || st.GIDBase < firstBase {
		t.Fatalf("id base %d/%d, want an allocated range", st.UIDBase, st.GIDBase)
	}
	// Start again: running = nil, same init.
	if err := e.r.Start(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if st2, _ := e.r.Status(context.Background(), c); st2.Pid != st.Pid {
		t.Fatalf("second start changed init %d -> %d", st.Pid, st2.Pid)
	}
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != strconv.Itoa(int(st.UIDBase)) || f[2] != "65536" {
		t.Fatalf("uid_map of init = %q", uidMap)
	}
	// rcS ran as container root in the container's hostname.
	want := "rcS ran as 0 in " + c.Hostname
	if !waitFor(10*time.Second, func() bool {
		b, _ := os.ReadFile(ConsoleLogPath(c))
		return strings.Contains(string(b), want)
	}) {
		b, _ := os.ReadFile(ConsoleLogPath(c))
		t.Fatalf("console log lacks %q:\n%s", want, b)
	}
	if got := e.mustSh(c, "hostname"); got != c.Hostname {
		t.Errorf("hostname %q, want %q", got, c.Hostname)
	}
	// Files of the image stay owned by 0 on disk and are root's inside.
	if got := e.mustSh(c, "stat -c %u:%g /bin/busybox; touch /newfile; stat -c %u /newfile"); got != "0:0\n0" {
		t.Errorf("ownership inside: %q", got)
	}
	if fi, err := os.Stat(filepath.Join(c.Root, "newfile")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("file created inside is not owned by 0 on disk: %v", err)
	}
	// ps shows only the container's processes: its init is pid 1.
	ps := e.mustSh(c, "ps -o pid,comm")
	lines := strings.Split(ps, "\n")
	if len(lines) > 8 || !strings.Contains(lines[1], "1 init") {
		t.Errorf("ps inside:\n%s", ps)
	}
	if err := e.r.Stop(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	st, err = e.r.Status(context.Background(), c)
	if err != nil || st.Running || st.ExitedAt.IsZero() {
		t.Fatalf("after stop: %+v, %v", st, err)
	}
	if b, _ := os.ReadFile(ConsoleLogPath(c)); !strings.Contains(string(b), "shutting down") {
		t.Errorf("init did not run its shutdown actions:\n%s", b)
	}
	// Stop again: stopped = nil.
	if err := e.r.Stop(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	// Restart keeps the id range.
	st2 := e.start(c)
	if st2.UIDBase != st.UIDBase || st2.Pid == st.Pid {
		t.Errorf("restart: %+v after %+v", st2, st)
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	e.start(c)
	ctx := context.Background()
	var out bytes.Buffer
	code, err := e.r.Exec(ctx, c, []string{"/bin/sh", "-c", "cat; echo err >&2; exit 7"}, strings.NewReader("hello\n"), &out, &out, false)
	if err != nil || code != 7 || out.String() != "hello\nerr\n" {
		t.Fatalf("exec: code %d, err %v, out %q", code, err, out.String())
	}
	if code, err := e.r.Exec(ctx, c, []string{"/nonexistent"}, nil, io.Discard, io.Discard, false); err != nil || code != 127 {
		t.Errorf("exec of a missing command: %d, %v", code, err)
	}
	// No fd past stdio reaches the container.
	// (Once the background child has exec'd sleep: before, it is a shell
	// with its own saved fds.)
	if fds := e.mustSh(c, `sleep 10 </dev/null & p=$!; i=0
		while [ "$(cat /proc/$p/comm)" != sleep ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
		ls /proc/$p/fd; kill $p`); fds != "0\n1\n2" {
		t.Errorf("fds of an exec'd shell: %q", fds)
	}
	// In the container's cgroup namespace (its own cgroup is the root)
	// and its cgroup on the host.
	if got := e.mustSh(c, "grep pids /proc/self/cgroup"); !strings.HasSuffix(got, ":/") {
		t.Errorf("cgroup inside: %q", got)
	}
	// No process the container can see lets it open a host binary: every
	// /proc/PID/exe it can reach is a file of its own image.
	out.Reset()
	e.mustSh(c, "sleep 30 </dev/null >/dev/null 2>&1 &")
	exes := e.mustSh(c, `for p in /proc/[0-9]*; do readlink $p/exe; done | sort -u`)
	for _, x := range strings.Fields(exes) {
		if x != "/bin/busybox" {
			t.Errorf("a process in the container runs %q", x)
		}
	}
	e.mustFail(c, "write a process binary", `for p in /proc/[0-9]*; do echo x >> $p/exe && exit 0; done; exit 1`)
	// With a tty: a pty of the container's own devpts.
	out.Reset()
	t.Setenv("TERM", "vt100")
	code, err = e.r.Exec(ctx, c, []string{"/bin/sh", "-c", "tty; echo $TERM; test -t 0 && exit 3"}, strings.NewReader(""), &out, &out, true)
	if err != nil || code != 3 || !strings.Contains(out.String(), "/dev/pts/0") || !strings.Contains(out.String(), "vt100") {
		t.Errorf("exec with tty: %d, %v, %q", code, err, out.String())
	}
	if _, err := e.r.Exec(ctx, &spec.Container{ID: "none", Private: t.TempDir()}, []string{"true"}, nil, nil, nil, false); err == nil {
		t.Error("exec into a container that never started succeeded")
	}
}

func TestIsolation(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	other := e.container(false)
	if err := os.WriteFile(filepath.Join(other.Root, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start(c)
	st2 := e.start(other)
	ctx := context.Background()
	if err := e.cg.Apply(ctx, c.ID, cgroups.Resources{Pids: 64}); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.r.Status(ctx, c); st.UIDBase == st2.UIDBase {
		t.Fatalf("two containers share id base %d", st.UIDBase)
	}
	hostName, _ := os.Hostname()
	corePattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	panicT, _ := os.ReadFile("/proc/sys/kernel/panic")

	e.mustFail(c, "host block devices", "find /dev -type b | grep -q .")
	e.mustFail(c, "mknod a disk", "mknod /tmp/sda b 8 0")
	e.mustFail(c, "reach core_pattern through a fresh proc",
		"mkdir -p /tmp/p && mount -t proc proc /tmp/p; echo '|/bin/evil' > /tmp/p/sys/kernel/core_pattern")
	e.mustFail(c, "write host sysfs through a fresh sysfs",
		"mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s; echo 1 > /tmp/s/kernel/mm/ksm/run")
	e.mustFail(c, "write host sysfs", "echo 1 > /sys/kernel/mm/ksm/run")
	e.mustFail(c, "set modprobe path", "echo /bin/evil > /proc/sys/kernel/modprobe")
	if bnd := e.mustSh(c, "grep CapBnd /proc/self/status | cut -f2"); bnd != "" {
		v, err := strconv.ParseUint(bnd, 16, 64)
		if err != nil || v&(1<<unix.CAP_SYS_MODULE) != 0 || v&(1<<unix.CAP_SYS_TIME) != 0 {
			t.Errorf("bounding set %s keeps sys_module or sys_time", bnd)
		}
	}
	if out, _ := e.sh(c, "date -s '2001-01-01 00:00:00'"); !strings.Contains(out, "not permitted") {
		t.Errorf("set the clock: %s", out)
	}
	e.mustFail(c, "set a host sysctl", "echo 7 > /proc/sys/kernel/panic")
	e.mustSh(c, "hostname renamed-inside")
	if got := e.mustSh(c, "ls /sys/class/net"); got != "lo" {
		t.Errorf("interfaces inside: %q", got)
	}
	e.mustFail(c, "see another container's files", "ls /secret || find / -xdev -name secret | grep -q .")
	e.mustFail(c, "raise its pids limit",
		"mkdir -p /tmp/cg && mount -t cgroup -o pids cgroup /tmp/cg; echo max > /tmp/cg/pids.max")
	r, err := e.cg.Read(ctx, c.ID)
	if err != nil || r.Pids != 64 {
		t.Errorf("pids limit after the attempt: %d, %v", r.Pids, err)
	}
	if h, _ := os.Hostname(); h != hostName {
		t.Errorf("host name changed to %q", h)
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/core_pattern"); !bytes.Equal(b, corePattern) {
		t.Errorf("core_pattern changed to %q", b)
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/panic"); !bytes.Equal(b, panicT) {
		t.Errorf("kernel.panic changed to %q", b)
	}
}

func TestForkBombStopsAtPidsLimit(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	e.start(c)
	ctx := context.Background()
	const limit = 40
	if err := e.cg.Apply(ctx, c.ID, cgroups.Resources{Pids: limit}); err != nil {
		t.Fatal(err)
	}
	// A bounded bomb: 200 forks that each stay.
	e.sh(c, "i=0; while [ $i -lt 200 ]; do sleep 300 </dev/null >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; exit 0")
	procs, err := e.cg.Procs(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) > limit || len(procs) < limit/2 {
		t.Errorf("%d processes in the cgroup with a limit of %d", len(procs), limit)
	}
	if st, err := e.r.Status(ctx, c); err != nil || !st.Running {
		t.Errorf("container after the bomb: %+v, %v", st, err)
	}
}

func TestStopKillsHungInit(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	c.Init = []string{"/bin/sh", "-c", "trap '' TERM USR2 INT HUP PWR; while :; do sleep 1; done"}
	c.StopTimeout = time.Second
	st := e.start(c)
	if err := e.r.Stop(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	st2, err := e.r.Status(context.Background(), c)
	if err != nil || st2.Running {
		t.Fatalf("hung init %d still running: %+v, %v", st.Pid, st2, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", st.Pid)); err == nil {
		if s, _, _ := procStartTime(st.Pid); s == st.StartTime {
			t.Fatalf("init %d survived stop", st.Pid)
		}
	}
	if st2.ExitCode != 128+int(unix.SIGKILL) {
		t.Errorf("exit code %d, want %d", st2.ExitCode, 128+int(unix.SIGKILL))
	}
}

func TestAdoptionAfterAgentKill(t *testing.T) {
	e := newEnv(t)
	cs := []*spec.Container{e.container(false), e.container(false)}
	job, _ := json.Marshal(agentJob{Parent: e.parent, Prefix: e.prefix, Containers: cs})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agent := exec.CommandContext(ctx, "/proc/self/exe", "-test.run=^$")
	agent.Env = append(os.Environ(), "VZD_TEST_AGENT="+string(job))
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	agent.Stderr = tWriter{t}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 256)
	n, _ := stdout.Read(line)
	if strings.TrimSpace(string(line[:n])) != "started" {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("agent: %q", line[:n])
	}
	var before []Status
	for _, c := range cs {
		st, err := e.r.Status(ctx, c)
		if err != nil || !st.Running {
			t.Fatalf("%s: %+v, %v", c.ID, st, err)
		}
		before = append(before, st)
	}
	agent.Process.Signal(syscall.SIGKILL)
	agent.Wait()
	// A new agent (a new Runtime) adopts both, init unchanged.
	r2, err := New(Config{Paths: spec.Paths{Prefix: e.prefix}, Cgroups: e.cg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		st, err := r2.Status(ctx, c)
		if err != nil || !st.Running || st.Pid != before[i].Pid || st.StartTime != before[i].StartTime {
			t.Errorf("%s after agent kill: %+v (was %+v), %v", c.ID, st, before[i], err)
		}
		if err := r2.Start(ctx, c); err != nil {
			t.Error(err)
		}
		if out, code := e.sh(c, "echo alive"); code != 0 || out != "alive" {
			t.Errorf("exec after adoption: %d %q", code, out)
		}
	}
	if cs[0].UIDBase == 0 && before[0].UIDBase == before[1].UIDBase {
		t.Errorf("two containers share id base %d", before[0].UIDBase)
	}
	// The supervisor survives too and records the exit.
	if err := r2.Stop(ctx, cs[0]); err != nil {
		t.Fatal(err)
	}
	if st, _ := r2.Status(ctx, cs[0]); st.Running || st.ExitedAt.IsZero() {
		t.Errorf("after stop by the new agent: %+v", st)
	}
}

func TestPrivilegedHardening(t *testing.T) {
	e := newEnv(t)
	c := e.container(true)
	c.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	st := e.start(c)
	if st.UIDBase != 0 {
		t.Errorf("privileged container got id base %d", st.UIDBase)
	}
	if got := e.mustSh(c, "cat /proc/sys/net/ipv4/ip_forward"); got != "1" {
		t.Errorf("sysctl from the spec: %q", got)
	}
	bnd := e.mustSh(c, "grep CapBnd /proc/self/status | cut -f2")
	v, err := strconv.ParseUint(bnd, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range dropCaps {
		if v&(1<<cp) != 0 {
			t.Errorf("bounding set %s keeps capability %d", bnd, cp)
		}
	}
	e.mustFail(c, "write /proc/sys", "echo 7 > /proc/sys/kernel/panic")
	e.mustFail(c, "write sysrq-trigger", "echo h > /proc/sysrq-trigger")
	e.mustFail(c, "write /sys", "echo 1 > /sys/kernel/mm/ksm/run")
	for _, p := range maskedProc {
		if _, err := os.Stat("/proc/" + p); err != nil {
			continue
		}
		if got := e.mustSh(c, "wc -c < /proc/"+p); got != "0" {
			t.Errorf("/proc/%s not masked: %s bytes", p, got)
		}
	}
	e.mustFail(c, "host block devices", "find /dev -type b | grep -q .")
	if out, _ := e.sh(c, "date -s '2001-01-01 00:00:00'"); !strings.Contains(out, "not permitted") {
		t.Errorf("set the clock: %s", out)
	}
}

func TestRecordsAndIDs(t *testing.T) {
	used := []uint32{firstBase, firstBase + 2*idRange}
	if b, err := nextFree(firstBase, used); err != nil || b != firstBase+idRange {
		t.Fatalf("nextFree = %d, %v", b, err)
	}
	// An unaligned start never overlaps a recorded range.
	if b, err := nextFree(firstBase+1000, used); err != nil || b != firstBase+1000+3*idRange {
		t.Fatalf("nextFree(unaligned) = %d, %v", b, err)
	}
	// Two containers with the same spec base (a node-wide LOCAL_UID)
	// get distinct ranges, each kept across restarts.
	prefix := t.TempDir()
	r := &Runtime{paths: spec.Paths{Prefix: prefix}}
	mk := func(id string) *spec.Container {
		c := &spec.Container{ID: id, UIDBase: 200000, Private: filepath.Join(prefix, "vz/private", id)}
		os.MkdirAll(c.Private, 0o700)
		return c
	}
	a, b := mk("a"), mk("b")
	ra, err := r.allocate(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := r.allocate(b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.UIDBase != 200000 || rb.UIDBase != 200000+idRange || ra.GIDBase != 200000 || rb.GIDBase != 200000+idRange {
		t.Errorf("ranges %d/%d and %d/%d", ra.UIDBase, ra.GIDBase, rb.UIDBase, rb.GIDBase)
	}
	if again, _ := r.allocate(b); again.UIDBase != rb.UIDBase {
		t.Errorf("range changed on restart: %d -> %d", rb.UIDBase, again.UIDBase)
	}
	st, zombie, err := procStartTime(os.Getpid())
	if err != nil || st == 0 || zombie {
		t.Fatalf("procStartTime(self) = %d, %v, %v", st, zombie, err)
	}
	if !alive(os.Getpid(), st) || alive(os.Getpid(), st+1) || alive(0, 0) {
		t.Fatal("alive is wrong")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.MkdirAll(filepath.Join(root, "lib/systemd"), 0o755)
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.Symlink("/lib/systemd/systemd", filepath.Join(root, "sbin/init"))
	os.Symlink("../bin/busybox", filepath.Join(root, "sbin/bbinit"))
	// An absolute link is resolved inside root, never on the host.
	os.Symlink("/../../../../bin/busybox", filepath.Join(root, "sbin/escape"))
	for path, want := range map[string]string{"/sbin/init": "systemd", "/sbin/bbinit": "busybox", "/sbin/escape": "busybox", "/bin/sh": ""} {
		if got := initKind(root, path); got != want {
			t.Errorf("initKind(%s) = %q, want %q", path, got, want)
		}
	}
	if stopSignal("systemd") != syscall.Signal(37) || stopSignal("busybox") != syscall.SIGUSR2 || stopSignal("") != syscall.SIGTERM {
		t.Error("stop signals")
	}
}

func TestStartFailureReportsAndCleansUp(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	c.Init = []string{"/no/such/init"}
	err := e.r.Start(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "/no/such/init") {
		t.Fatalf("start with a missing init: %v", err)
	}
	if st, _ := e.r.Status(context.Background(), c); st.Running {
		t.Fatalf("running after a failed start: %+v", st)
	}
	if procs, _ := e.cg.Procs(context.Background(), c.ID); len(procs) != 0 {
		t.Errorf("processes left in the cgroup: %v", procs)
	}
}

func TestConsoleLogIsCapped(t *testing.T) {
	e := newEnv(t)
	c := e.container(false)
	// 3 MiB of console output, then idle.
	c.Init = []string{"/bin/sh", "-c", "yes 0123456789abcdef | head -c 3145728; echo; echo last-line; exec sleep 1000"}
	c.StopTimeout = time.Second
	e.start(c)
	log := ConsoleLogPath(c)
	if !waitFor(30*time.Second, func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "last-line")
	}) {
		t.Fatal("console log never got the last line")
	}
	for _, p := range []string{log, log + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > consoleLogMax {
			t.Errorf("%s is %d bytes, cap %d", p, fi.Size(), consoleLogMax)
		}
	}
}
