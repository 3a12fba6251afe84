package runtime

import (
	"encoding/json"
	"errors"
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
	roleSupervise = "supervise" // C: double fork + setsid; Go: set up and start init
	roleInit      = "init"      // Go: stage 2 inside the new namespaces
	roleReap      = "reap"      // C only: the resident supervisor
	roleNsexec    = "nsexec"    // C only: vzd exec
)

// supervisorCgroup is where supervisors live in every hierarchy: outside
// the agent's cgroup (so that stopping the agent's unit leaves them) and
// outside the containers' (so that killing a container's cgroup leaves its
// supervisor to record the exit).
const supervisorCgroup = "vzd-supervisors"

// launch is everything the supervisor and the init stage need; the agent
// sends it to the supervisor, which adds Console and passes it on.
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

// supervise is the Go half of the supervisor, already detached by the C
// constructor: it reads the launch from fd 3, starts init, reports to fd 4
// and turns into the C reaper. It never returns.
func supervise() {
	cfg := os.NewFile(3, "launch")
	report := os.NewFile(4, "report")
	fail := func(err error) {
		b, _ := json.Marshal(spawnResult{Error: err.Error()})
		report.Write(b)
		os.Exit(1)
	}
	b, err := io.ReadAll(cfg)
	if err != nil {
		fail(fmt.Errorf("read launch config: %w", err))
	}
	cfg.Close()
	var l launch
	if err := json.Unmarshal(b, &l); err != nil {
		fail(fmt.Errorf("parse launch config: %w", err))
	}
	master, slave, err := openPty()
	if err != nil {
		fail(err)
	}
	if !l.Privileged {
		// The container's root must be able to open its console.
		if err := slave.Chown(int(l.UIDBase), int(l.GIDBase)); err != nil {
			fail(fmt.Errorf("chown console: %w", err))
		}
	}
	l.Console = slave.Name()
	pid, err := startInit(l, slave)
	if err != nil {
		fail(err)
	}
	rec := l.Record
	rec.Pid = pid
	rec.StartTime, _, _ = procStartTime(pid)
	rec.StartedAt = time.Now().UTC()
	rec.SupervisorPid = os.Getpid()
	rec.SupervisorStart, _, _ = procStartTime(os.Getpid())
	if err := writeRecordFast(l.Private, rec); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		fail(err)
	}
	b, _ = json.Marshal(spawnResult{Pid: pid})
	if _, err := report.Write(b); err != nil {
		// The agent gave up on us: so do we.
		unix.Kill(pid, unix.SIGKILL)
	}
	report.Close()
	// Keep both pty ends across exec: holding the slave keeps the master
	// readable even while nobody in the container has the console open.
	for _, f := range []*os.File{master, slave} {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			os.Exit(1)
		}
	}
	env := []string{
		envRole + "=" + roleReap,
		"_VZD_REAP_PID=" + strconv.Itoa(pid),
		"_VZD_REAP_FD=" + strconv.Itoa(int(master.Fd())),
		"_VZD_REAP_MAX=" + strconv.Itoa(consoleLogMax),
		"_VZD_REAP_LOG=" + filepath.Join(l.Private, stateDir, consoleFile),
		"_VZD_REAP_EXIT=" + exitPath(l.Private),
		// The reaper leaves the agent's cgroup once it knows init still
		// runs: off the start path (a v1 move waits for an RCU grace
		// period, about 15 ms here), and pointless for an init that
		// already exited.
		"_VZD_REAP_CGROUPS=" + strings.Join(supervisorCgroups(), "\n"),
	}
	err = unix.Exec("/proc/self/exe", []string{"vzd-supervisor", l.ID}, env)
	// Without a reaper nobody records the exit; init still runs.
	fmt.Fprintf(os.Stderr, "exec reaper: %v\n", err)
	os.Exit(1)
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

// startInit clones the init stage into new namespaces, puts it into the
// container's cgroup, hands it the container's root as a mount fd
// (idmapped onto its user namespace unless privileged) and waits until it
// has exec'd the container's init.
func startInit(l launch, console *os.File) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "init-parent")
	child := os.NewFile(uintptr(fds[1]), "init-child")
	defer parent.Close()
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET)
	attr := &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if !l.Privileged {
		flags |= unix.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(l.UIDBase), Size: idRange}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(l.GIDBase), Size: idRange}}
		attr.GidMappingsEnableSetgroups = true
		// Become the namespace's root before exec, or exec drops every
		// capability.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	attr.Cloneflags = flags
	cmd := &exec.Cmd{
		// Through /proc/self/exe: the container's root cannot walk the
		// host path of our binary.
		Path:        "/proc/self/exe",
		Args:        []string{"vzd-init", l.ID},
		Env:         []string{envRole + "=" + roleInit},
		Stdin:       console,
		Stdout:      console,
		Stderr:      console,
		ExtraFiles:  []*os.File{child},
		SysProcAttr: attr,
	}
	if err := cmd.Start(); err != nil {
		child.Close()
		return 0, fmt.Errorf("clone init: %w", err)
	}
	child.Close()
	pid := cmd.Process.Pid
	kill := func(err error) (int, error) {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, err
	}
	for _, d := range l.CgroupDirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return kill(fmt.Errorf("move init into %s: %w", d, err))
		}
	}
	mfd, err := rootMount(l, pid)
	if err != nil {
		return kill(err)
	}
	b, _ := json.Marshal(l)
	err = unix.Sendmsg(fds[0], b, unix.UnixRights(mfd), nil, 0)
	unix.Close(mfd)
	if err != nil {
		return kill(fmt.Errorf("send root to init: %w", err))
	}
	// The init stage either reports an error or closes its end by
	// exec'ing the container's init (the socket is close-on-exec).
	buf := make([]byte, 4096)
	n, err := parent.Read(buf)
	if n > 0 {
		return kill(fmt.Errorf("init stage: %s", buf[:n]))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return kill(fmt.Errorf("wait for init: %w", err))
	}
	// init may already have exited (a zombie): the reaper records it.
	return pid, nil
}

// rootMount clones the container's root (with every mount under it) into
// a detached mount, idmapped onto the user namespace of pid unless the
// container is privileged. The image stays owned by 0..65535 on disk.
func rootMount(l launch, pid int) (int, error) {
	mfd, err := unix.OpenTree(unix.AT_FDCWD, l.Root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone mount %s: %w", l.Root, err)
	}
	if l.Privileged {
		return mfd, nil
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		unix.Close(mfd)
		return -1, fmt.Errorf("open user namespace of %d: %w", pid, err)
	}
	defer ns.Close()
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		unix.Close(mfd)
		return -1, fmt.Errorf("idmap mount %s: %w", l.Root, err)
	}
	return mfd, nil
}
