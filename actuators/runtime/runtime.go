package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vzd/actuators/cgroups"
	"vzd/spec"
)

// ErrNotRunning is returned by Exec and InitPid for a stopped container.
var ErrNotRunning = errors.New("container is not running")

// consoleLogMax caps the console log: the supervisor rotates it to
// console.log.1 past this size, so at most twice this is kept.
const consoleLogMax = 1 << 20

// Config configures a Runtime.
type Config struct {
	Paths   spec.Paths
	Cgroups cgroups.Manager // places containers; required
	Log     *slog.Logger    // default slog.Default()
	// Exe is the binary re-executed as supervisor, init stage and exec
	// helper; default: this process's own binary (/proc/self/exe
	// resolved). It must call Main first thing.
	Exe string
	// Roots builds the root of an unprivileged container whose root
	// cannot be an idmapped clone of c.Root (dedup's overlay); nil: every
	// unprivileged root is an idmapped clone of c.Root.
	Roots RootShifter
}

// RootShifter builds an unprivileged container's root for its id range at
// start. dedup.Mounter implements it.
type RootShifter interface {
	// ShiftRoot either makes c.Root a mount whose files are already owned
	// by the container's host ids (uidBase.., gidBase..; userns is an open
	// /proc/PID/ns/user of the container with that mapping) and reports
	// true, so that the runtime passes a clone of it on without idmapping
	// it, or reports false and leaves c.Root a view to idmap.
	ShiftRoot(ctx context.Context, c *spec.Container, uidBase, gidBase uint32, userns int) (bool, error)
}

// Runtime starts, stops, observes and enters containers. It keeps no state
// of its own beyond per-container locks: everything is read back from the
// records in each private area and verified against the kernel, so a new
// Runtime (a restarted agent) adopts running containers as they are.
type Runtime struct {
	paths spec.Paths
	cg    cgroups.Manager
	log   *slog.Logger
	exe   string
	roots RootShifter

	allocMu sync.Mutex // serialises uid range allocation
	mu      sync.Mutex
	locks   map[string]*sync.Mutex
}

// New returns a Runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.Cgroups == nil {
		return nil, errors.New("runtime: no cgroup manager")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own binary: %w", err)
		}
		cfg.Exe = exe
	}
	return &Runtime{paths: cfg.Paths, cg: cfg.Cgroups, log: cfg.Log.With("actuator", "runtime"), exe: cfg.Exe, roots: cfg.Roots, locks: map[string]*sync.Mutex{}}, nil
}

func (r *Runtime) lock(id string) func() {
	r.mu.Lock()
	m := r.locks[id]
	if m == nil {
		m = &sync.Mutex{}
		r.locks[id] = m
	}
	r.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Status is what the runtime observes of one container.
type Status struct {
	Running   bool
	Pid       int    // host pid of the container's init
	StartTime uint64 // from /proc/PID/stat, clock ticks since boot
	StartedAt time.Time
	ExitCode  int // of the last init that exited, when not running
	ExitedAt  time.Time
	UIDBase   uint32
	GIDBase   uint32
}

// Status reads the container's record and verifies it against /proc (pid
// and start time) and the container's cgroup. It changes nothing.
func (r *Runtime) Status(ctx context.Context, c *spec.Container) (Status, error) {
	rec, err := readRecord(c.Private)
	if err != nil {
		return Status{}, err
	}
	return r.status(ctx, c, rec), nil
}

func (r *Runtime) status(ctx context.Context, c *spec.Container, rec record) Status {
	st := Status{Pid: rec.Pid, StartTime: rec.StartTime, StartedAt: rec.StartedAt, UIDBase: rec.UIDBase, GIDBase: rec.GIDBase}
	if initAlive(c.ID, rec.Pid, rec.StartTime) {
		st.Running = r.inCgroupRecently(ctx, c.ID, rec.Pid, rec.StartTime)
	}
	if !st.Running {
		if e, ok := readExit(c.Private); ok {
			st.ExitCode, st.ExitedAt = e.ExitCode, e.ExitedAt
		}
	}
	return st
}

// inCgroup reports whether pid is in the container's cgroup. It reads the
// process's /proc/PID/cgroup (one file) rather than walking the container's
// tree in every hierarchy: every pass asks it of every running container.
func (r *Runtime) inCgroup(ctx context.Context, id string, pid int) bool {
	dirs := r.cg.Dirs(id)
	for _, key := range []string{"pids", "freezer", "memory", ""} {
		if dir, ok := dirs[key]; ok {
			if in, err := cgroups.InCgroup(pid, key, dir); err == nil {
				return in
			}
			break
		}
	}
	procs, err := r.cg.Procs(ctx, id)
	return err == nil && slices.Contains(procs, pid)
}

// InitPid returns the host pid of the container's running init (its
// namespaces are at /proc/PID/ns/*).
func (r *Runtime) InitPid(ctx context.Context, c *spec.Container) (int, error) {
	st, err := r.Status(ctx, c)
	if err != nil {
		return 0, err
	}
	if !st.Running {
		return 0, fmt.Errorf("container %s: %w", c.ID, ErrNotRunning)
	}
	return st.Pid, nil
}

// allocate fixes the container's id ranges. The spec's UIDBase/GIDBase
// (legacy LOCAL_UID/LOCAL_GID, often set once for the whole node in
// vz.conf) is where the search starts, default 100000: the range is the
// first start+k·65536 that overlaps no range another container under
// Paths.PrivateBase() records, so no two containers share ids. It is
// recorded and kept across restarts while the spec's bases stay the same.
func (r *Runtime) allocate(c *spec.Container) (record, error) {
	r.allocMu.Lock()
	defer r.allocMu.Unlock()
	rec, err := readRecord(c.Private)
	if err != nil {
		return rec, err
	}
	old := rec
	rec.Privileged = c.Privileged
	if c.Privileged {
		rec.UIDBase, rec.GIDBase = 0, 0
		return rec, writeRecordIfChanged(c.Private, old, rec)
	}
	if rec.UIDBase != 0 && rec.GIDBase != 0 && rec.SpecUIDBase == c.UIDBase && rec.SpecGIDBase == c.GIDBase {
		return rec, writeRecordIfChanged(c.Private, old, rec)
	}
	uids, gids, err := usedRanges(r.paths.PrivateBase(), c.Private)
	if err != nil {
		return rec, fmt.Errorf("list id ranges: %w", err)
	}
	ustart, gstart := c.UIDBase, c.GIDBase
	if ustart == 0 {
		ustart = firstBase
	}
	if gstart == 0 {
		gstart = ustart
	}
	if rec.UIDBase, err = nextFree(ustart, uids); err != nil {
		return rec, err
	}
	if rec.GIDBase, err = nextFree(gstart, gids); err != nil {
		return rec, err
	}
	rec.SpecUIDBase, rec.SpecGIDBase = c.UIDBase, c.GIDBase
	return rec, writeRecordIfChanged(c.Private, old, rec)
}

// writeRecordIfChanged makes the id range durable when it changed.
func writeRecordIfChanged(private string, old, rec record) error {
	if old == rec {
		if _, err := os.Stat(recordPath(private)); err == nil {
			return nil
		}
	}
	return writeRecord(private, rec)
}

// Start boots the container's init under a detached supervisor and
// returns once init runs. A running container is left alone (nil).
func (r *Runtime) Start(ctx context.Context, c *spec.Container) (retErr error) {
	defer r.lock(c.ID)()
	rec, err := readRecord(c.Private)
	if err != nil {
		return err
	}
	if r.status(ctx, c, rec).Running {
		return nil
	}
	if alive(rec.Pid, rec.StartTime) {
		// Its init runs but not in its cgroup: never start a second one.
		return fmt.Errorf("start %s: init %d runs outside the container's cgroup", c.ID, rec.Pid)
	}
	rec, err = r.allocate(c)
	if err != nil {
		return err
	}
	if err := r.cg.Create(ctx, c.ID); err != nil {
		return fmt.Errorf("create cgroup of %s: %w", c.ID, err)
	}
	if !c.Privileged {
		if err := r.cg.Delegate(ctx, c.ID, int(rec.UIDBase), int(rec.GIDBase)); err != nil {
			return fmt.Errorf("delegate cgroup of %s: %w", c.ID, err)
		}
	}
	if err := os.Remove(exitPath(c.Private)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Leftovers of a start the agent did not finish (it died before the
	// record was written) or of a lost record: nothing may run here.
	if procs, err := r.cg.Procs(ctx, c.ID); err == nil && len(procs) > 0 {
		r.log.Warn("killing unrecorded processes in the container's cgroup", "container", c.ID, "pids", procs)
		if err := r.cg.Kill(ctx, c.ID); err != nil {
			return fmt.Errorf("kill cgroup of %s: %w", c.ID, err)
		}
	}
	l := launchFor(c, rec, r.cg.Dirs(c.ID))
	rec, err = r.spawn(ctx, c, l)
	if err != nil {
		// Whatever began in the cgroup is ours to end.
		_ = r.cg.Kill(context.WithoutCancel(ctx), c.ID)
		return fmt.Errorf("start %s: %w", c.ID, err)
	}
	r.log.Info("container started", "container", c.ID, "pid", rec.Pid, "uid_base", rec.UIDBase)
	return nil
}

// Stop asks init to shut down with its own signal, waits up to the spec's
// stop timeout (default 60 s), then kills every process of the container's
// cgroup. A stopped container is left alone (nil). Unmounting is the
// caller's.
func (r *Runtime) Stop(ctx context.Context, c *spec.Container) error {
	defer r.lock(c.ID)()
	defer forgetInit(c.ID)
	rec, err := readRecord(c.Private)
	if err != nil {
		return err
	}
	timeout := c.StopTimeout
	if timeout <= 0 {
		timeout = spec.DefaultStopTimeout
	}
	// By /proc alone: an init that left its cgroup is stopped too.
	if alive(rec.Pid, rec.StartTime) {
		pidfd, err := openPidfd(rec.Pid, rec.StartTime)
		if err == nil {
			sig := syscall.Signal(rec.StopSignal)
			if sig == 0 {
				sig = syscall.SIGTERM
			}
			r.log.Info("stopping container", "container", c.ID, "pid", rec.Pid, "signal", int(sig), "timeout", timeout)
			// An init that has not yet installed its handler does not
			// see a signal from outside its pid namespace: send it
			// again every second until init exits or time runs out.
			deadline := time.Now().Add(timeout)
			exited := false
			for !exited && time.Now().Before(deadline) && ctx.Err() == nil {
				if err := unix.PidfdSendSignal(pidfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
					r.log.Warn("signal init", "container", c.ID, "err", err)
				}
				exited = waitPidfd(ctx, pidfd, min(time.Second, time.Until(deadline)))
			}
			if !exited {
				r.log.Warn("init did not stop in time, killing", "container", c.ID, "timeout", timeout)
				_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			}
			unix.Close(pidfd)
		}
	}
	// SIGKILL to whatever is left in the cgroup (all of it after a
	// timeout; stragglers of an earlier failed start otherwise).
	if err := r.cg.Kill(ctx, c.ID); err != nil {
		return fmt.Errorf("kill cgroup of %s: %w", c.ID, err)
	}
	// Let the supervisor record the exit before we report stopped.
	if pidfd, err := openPidfd(rec.SupervisorPid, rec.SupervisorStart); err == nil {
		waitPidfd(ctx, pidfd, 10*time.Second)
		unix.Close(pidfd)
	}
	return nil
}

// openPidfd opens a pidfd for pid and checks it is still the process that
// started at start (a pidfd pins the process, a pid alone does not).
func openPidfd(pid int, start uint64) (int, error) {
	if pid <= 0 {
		return -1, unix.ESRCH
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// A zombie still matches: waiting on an exited process is instant,
	// and signalling one is harmless.
	if st, _, err := procStartTime(pid); err != nil || st != start {
		unix.Close(fd)
		return -1, fmt.Errorf("pid %d: %w", pid, unix.ESRCH)
	}
	return fd, nil
}

// waitPidfd waits until the process exits (true) or timeout or ctx ends.
func waitPidfd(ctx context.Context, fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return false
		}
		ms := int(min(left, 200*time.Millisecond) / time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, max(ms, 1))
		if err == nil && n > 0 {
			return true
		}
	}
}

// Exec runs argv inside the running container: in its cgroup and every
// one of its namespaces, as its root, with stdio wired through (a pty of
// the container's own devpts when tty). It returns the command's exit
// status (128+signal when killed). The joining helper is this binary
// re-executed; it joins from a C constructor before the Go runtime starts,
// is not dumpable and is never in the container's pid namespace, and the
// command gets no fd past stdio, so the container cannot reach the host
// binary or a host fd. A setup failure of the helper exits 255.
func (r *Runtime) Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("exec: no command")
	}
	rec, err := readRecord(c.Private)
	if err != nil {
		return -1, err
	}
	if !r.status(ctx, c, rec).Running {
		return -1, fmt.Errorf("container %s: %w", c.ID, ErrNotRunning)
	}
	pidfd, err := openPidfd(rec.Pid, rec.StartTime)
	if err != nil {
		return -1, fmt.Errorf("container %s: %w", c.ID, err)
	}
	pf := os.NewFile(uintptr(pidfd), "pidfd")
	defer pf.Close()
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	if !rec.Privileged {
		flags |= unix.CLONE_NEWUSER
	}
	var procs []string
	for _, d := range sortedDirs(r.cg.Dirs(c.ID)) {
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	cmd := exec.CommandContext(ctx, r.exe)
	cmd.Args = append([]string{"vzd-exec"}, argv...)
	cmd.Env = []string{
		envRole + "=" + roleNsexec,
		"_VZD_NS_FD=3",
		"_VZD_NS_FLAGS=" + strconv.Itoa(flags),
		"_VZD_CGROUPS=" + strings.Join(procs, "\n"),
	}
	if tty {
		cmd.Env = append(cmd.Env, "_VZD_TTY=1")
		if t := os.Getenv("TERM"); t != "" {
			cmd.Env = append(cmd.Env, "TERM="+t)
		}
	}
	cmd.ExtraFiles = []*os.File{pf}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", c.ID, err)
	}
	return 0, nil
}

// sortedDirs returns the cgroup directories in a stable order.
func sortedDirs(m map[string]string) []string {
	var ds []string
	for _, d := range m {
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	return ds
}
