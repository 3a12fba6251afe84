package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Roles of a re-executed vzd, chosen by the environment variable envRole.
// The early ones are handled in nsexec.c; Main runs the others.
const (
	envRole       = "_VZD_ROLE"
	roleSupervise = "supervise" // C only: the per-container supervisor
	roleNsexec    = "nsexec"    // C only: vzd exec
)

// supervisorCgroup is where supervisors live in every hierarchy: outside
// the agent's cgroup (so that stopping the agent's unit leaves them) and
// outside the containers' (so that killing a container's cgroup leaves its
// supervisor to record the exit).
const supervisorCgroup = "vzd-supervisors"

// launch is everything the init stage needs; the agent sends it over the
// init stage's socket.
type launch struct {
	ID         string            `json:"id"`
	Root       string            `json:"root"`
	Private    string            `json:"private"`
	Hostname   string            `json:"hostname,omitempty"`
	Init       []string          `json:"init"`
	Sysctl     map[string]string `json:"sysctl,omitempty"`
	Privileged bool              `json:"privileged"`
	Systemd    bool              `json:"systemd"`
	UIDBase    uint32            `json:"uid_base"`
	GIDBase    uint32            `json:"gid_base"`
	CgroupDirs []string          `json:"cgroup_dirs"`
	Record     record            `json:"record"`
	Console    string            `json:"console,omitempty"` // host path of the console pty slave
}

func launchFor(c *spec.Container, rec record, dirs map[string]string) launch {
	argv := c.Init
	if len(argv) == 0 {
		argv = []string{spec.DefaultInit}
	}
	kind := initKind(c.Root, argv[0])
	// Never the host's name, which a new UTS namespace would copy.
	hostname := c.Hostname
	if hostname == "" {
		hostname = c.ID
	}
	rec.StopSignal = int(stopSignal(kind))
	return launch{
		ID: c.ID, Root: c.Root, Private: c.Private, Hostname: hostname,
		Init: argv, Sysctl: c.Sysctl, Privileged: c.Privileged, Systemd: kind == "systemd",
		UIDBase: rec.UIDBase, GIDBase: rec.GIDBase, CgroupDirs: sortedDirs(dirs), Record: rec,
	}
}

// initKind resolves path inside root (symlinks taken relative to root,
// never escaping it) and names the init it finds: "systemd", "busybox" or
// "" for anything else.
func initKind(root, path string) string {
	p := path
	for range 16 {
		host := filepath.Join(root, filepath.Clean("/"+p))
		t, err := os.Readlink(host)
		if err != nil {
			break
		}
		if filepath.IsAbs(t) {
			p = t
		} else {
			p = filepath.Join(filepath.Dir(filepath.Clean("/"+p)), t)
		}
	}
	switch filepath.Base(p) {
	case "systemd":
		return "systemd"
	case "busybox":
		return "busybox"
	}
	return ""
}

// sigRTMin is glibc's SIGRTMIN (the kernel's 32 and 33 are taken by NPTL).
const sigRTMin = 34

// stopSignal is the signal on which each init shuts down and exits:
// systemd halts on SIGRTMIN+3; busybox init powers off on SIGUSR2 (SIGTERM
// would make it reboot, which in a pid namespace ends init too, but says
// the wrong thing); others get SIGTERM.
func stopSignal(kind string) syscall.Signal {
	switch kind {
	case "systemd":
		return syscall.Signal(sigRTMin + 3)
	case "busybox":
		return syscall.SIGUSR2
	}
	return syscall.SIGTERM
}

// supervisorCgroups makes vzd-supervisors at the root of every cgroup
// hierarchy mounted under /sys/fs/cgroup and returns their cgroup.procs
// files. Failures are not fatal: the supervisor then stays where the
// agent was in that hierarchy.
func supervisorCgroups() []string {
	var procs []string
	roots := []string{"/sys/fs/cgroup"}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, root := range roots {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(root, supervisorCgroup)
		if err := os.Mkdir(dir, 0o755); err == nil && strings.HasSuffix(root, "cpuset") {
			// A new v1 cpuset is empty and takes no task until filled.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(root, f)); err == nil {
					os.WriteFile(filepath.Join(dir, f), v, 0o644)
				}
			}
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	return procs
}

// openPty opens a host pty pair for the container's console.
func openPty() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("get pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(int(n))
	s, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return m, s, nil
}

// spawn runs the container's supervisor (nsexec.c, which clones the init
// stage and reports both pids), then finishes the set-up from here: puts
// init into the container's cgroup, hands it the container's root as a
// mount fd (idmapped onto its user namespace unless privileged), and waits
// until it has exec'd the container's init. On error, init is killed (the
// supervisor records its exit and leaves).
func (r *Runtime) spawn(ctx context.Context, c *spec.Container, l launch) (rec record, retErr error) {
	rec = l.Record
	master, slave, err := openPty()
	if err != nil {
		return rec, err
	}
	defer master.Close()
	defer slave.Close()
	if !l.Privileged {
		// The container's root must be able to open its console.
		if err := slave.Chown(int(l.UIDBase), int(l.GIDBase)); err != nil {
			return rec, fmt.Errorf("chown console: %w", err)
		}
	}
	l.Console = slave.Name()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return rec, fmt.Errorf("socketpair: %w", err)
	}
	sock := os.NewFile(uintptr(fds[0]), "init-parent")
	child := os.NewFile(uintptr(fds[1]), "init-child")
	defer sock.Close()
	defer child.Close()
	repR, repW, err := os.Pipe()
	if err != nil {
		return rec, err
	}
	defer repR.Close()
	defer repW.Close()

	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET
	env := []string{
		envRole + "=" + roleSupervise,
		"_VZD_REAP_MAX=" + strconv.Itoa(consoleLogMax),
		"_VZD_REAP_LOG=" + filepath.Join(l.Private, stateDir, consoleFile),
		"_VZD_REAP_EXIT=" + exitPath(l.Private),
		// The supervisor leaves the agent's cgroup once it knows init
		// still runs: off the start path (a v1 move waits for an RCU
		// grace period, about 15 ms here), and pointless for an init
		// that already exited.
		"_VZD_REAP_CGROUPS=" + strings.Join(supervisorCgroups(), "\n"),
	}
	if !l.Privileged {
		flags |= unix.CLONE_NEWUSER
		env = append(env,
			fmt.Sprintf("_VZD_SUP_UIDMAP=0 %d %d", l.UIDBase, idRange),
			fmt.Sprintf("_VZD_SUP_GIDMAP=0 %d %d", l.GIDBase, idRange))
	}
	env = append(env, "_VZD_SUP_FLAGS="+strconv.Itoa(flags))
	// Not CommandContext: the supervisor must outlive this call.
	cmd := exec.Command(r.exe)
	cmd.Args = []string{"vzd-supervisor", l.ID}
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{master, slave, child, repW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return rec, fmt.Errorf("run supervisor: %w", err)
	}
	child.Close()
	repW.Close()
	// The first process exits as soon as it has forked the supervisor.
	if err := cmd.Wait(); err != nil {
		return rec, fmt.Errorf("run supervisor: %w", err)
	}
	report, err := readWithContext(ctx, repR)
	if err != nil {
		return rec, fmt.Errorf("read supervisor report: %w", err)
	}
	var supPid, pid int
	if _, err := fmt.Sscanf(report, "%d %d", &supPid, &pid); err != nil || pid <= 0 {
		return rec, fmt.Errorf("supervisor: %s", strings.TrimSpace(report))
	}
	defer func() {
		if retErr != nil {
			unix.Kill(pid, unix.SIGKILL)
		}
	}()
	for _, d := range l.CgroupDirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return rec, fmt.Errorf("move init into %s: %w", d, err)
		}
	}
	mfd, err := r.rootMount(ctx, c, l, pid)
	if err != nil {
		return rec, err
	}
	prog, err := initProgram(&l)
	if err != nil {
		unix.Close(mfd)
		return rec, err
	}
	err = unix.Sendmsg(fds[0], prog.encode(), unix.UnixRights(mfd), nil, 0)
	unix.Close(mfd)
	if err != nil {
		return rec, fmt.Errorf("send root to init: %w", err)
	}
	// The init stage either reports an error or closes its end by
	// exec'ing the container's init (the socket is close-on-exec).
	msg, err := readWithContext(ctx, sock)
	if err != nil {
		return rec, fmt.Errorf("wait for init: %w", err)
	}
	if msg != "" {
		return rec, fmt.Errorf("init stage: %s", msg)
	}
	// init may already have exited (a zombie): the supervisor records it.
	rec.Pid = pid
	rec.StartTime, _, _ = procStartTime(pid)
	rec.StartedAt = time.Now().UTC()
	rec.SupervisorPid = supPid
	rec.SupervisorStart, _, _ = procStartTime(supPid)
	if err := writeRecordFast(l.Private, rec); err != nil {
		return rec, err
	}
	return rec, nil
}

// readWithContext reads f to EOF, or gives up when ctx ends.
func readWithContext(ctx context.Context, f *os.File) (string, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(f)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		return string(res.b), res.err
	case <-ctx.Done():
		f.Close() // unblocks the reader
		return "", ctx.Err()
	}
}

// rootMount clones the container's root (with every mount under it) into
// a detached mount, idmapped onto the user namespace of pid unless the
// container is privileged or its root is already built for its ids (an
// overlay from r.roots, which cannot be idmapped). The image stays owned
// by 0..65535 on disk.
func (r *Runtime) rootMount(ctx context.Context, c *spec.Container, l launch, pid int) (int, error) {
	var ns *os.File
	shifted := false
	if !l.Privileged {
		var err error
		ns, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
		if err != nil {
			return -1, fmt.Errorf("open user namespace of %d: %w", pid, err)
		}
		defer ns.Close()
		if r.roots != nil {
			if shifted, err = r.roots.ShiftRoot(ctx, c, l.UIDBase, l.GIDBase, int(ns.Fd())); err != nil {
				return -1, fmt.Errorf("build root of %s: %w", l.ID, err)
			}
		}
	}
	mfd, err := unix.OpenTree(unix.AT_FDCWD, l.Root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone mount %s: %w", l.Root, err)
	}
	if l.Privileged || shifted {
		return mfd, nil
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		unix.Close(mfd)
		return -1, fmt.Errorf("idmap mount %s: %w", l.Root, err)
	}
	return mfd, nil
}
