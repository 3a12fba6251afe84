package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities no container keeps in its bounding set, as LXC and
// systemd-nspawn drop them: in a user namespace they are useless anyway,
// for a privileged container they are the obvious ways out.
var dropCaps = []uintptr{unix.CAP_SYS_MODULE, unix.CAP_SYS_RAWIO, unix.CAP_SYS_TIME, unix.CAP_MAC_ADMIN, unix.CAP_MAC_OVERRIDE}

// Host device nodes bind-mounted into the container's /dev: harmless ones
// (no block device, no memory, no console of the host).
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// Masked in a privileged container's /proc (as LXC and nspawn do).
var maskedProc = []string{"kcore", "kmsg", "sysrq-trigger", "timer_list", "keys", "latency_stats", "sched_debug"}

// initStage is stage 2 of start, running as the (namespaced) root of the
// new namespaces: it receives the launch and the root mount on fd 3,
// builds the container's file system view, then execs the container's
// init. Errors go back on fd 3. It never returns.
func initStage() {
	// unshare, the capability bounding set and exec act on this thread.
	goruntime.LockOSThread()
	const sock = 3
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
	if err != nil {
		os.Exit(1)
	}
	fail := func(err error) {
		unix.Write(sock, []byte(err.Error()))
		os.Exit(1)
	}
	var l launch
	if err := json.Unmarshal(buf[:n], &l); err != nil {
		fail(fmt.Errorf("parse launch: %w", err))
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		fail(errors.New("no root mount received"))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		fail(errors.New("no root mount received"))
	}
	if err := setupContainer(&l, fds[0]); err != nil {
		fail(err)
	}
	env := []string{"container=vzd", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "HOME=/"}
	// Every fd past stdio (ours, the Go runtime's) closes on exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fail(fmt.Errorf("close fds: %w", err))
	}
	err = unix.Exec(l.Init[0], l.Init, env)
	fail(fmt.Errorf("exec %s: %w", l.Init[0], err))
}

func setupContainer(l *launch, rootfd int) error {
	// The supervisor has put us in the container's cgroup: this makes it
	// the root of our cgroup namespace.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("unshare cgroup namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// Attach the root where every uid can reach it: the container's root
	// may not traverse the host's path to it. The tmpfs under it goes
	// with the old root.
	if err := unix.Mount("vzd", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700,size=64k"); err != nil {
		return fmt.Errorf("mount staging tmpfs: %w", err)
	}
	root := "/tmp/root"
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	if err := unix.MoveMount(rootfd, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach root: %w", err)
	}
	unix.Close(rootfd)
	if err := mountAll(l, root); err != nil {
		return err
	}
	if l.Hostname != "" {
		if err := unix.Sethostname([]byte(l.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	for k, v := range l.Sysctl {
		if strings.Contains(k, "..") {
			return fmt.Errorf("sysctl %s: bad name", k)
		}
		p := filepath.Join(root, "proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	if l.Privileged {
		if err := hardenProc(root); err != nil {
			return err
		}
	}
	if err := pivot(root); err != nil {
		return err
	}
	for _, c := range dropCaps {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

type mnt struct {
	src, dst, fstype string
	flags            uintptr
	data             string
}

func mountAll(l *launch, root string) error {
	in := func(p string) string { return filepath.Join(root, p) }
	const common = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	ms := []mnt{
		{"proc", "proc", "proc", common, ""},
		// Ours to mount fresh: we own the network namespace. Read-only.
		{"sysfs", "sys", "sysfs", common | unix.MS_RDONLY, ""},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=755,size=64k"},
		{"devpts", "dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"tmpfs", "dev/shm", "tmpfs", common, "mode=1777"},
		{"mqueue", "dev/mqueue", "mqueue", common, ""},
		{"tmpfs", "run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"},
	}
	if l.Systemd {
		ms = append(ms, mnt{"tmpfs", "tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"})
	}
	for _, m := range ms {
		if err := os.MkdirAll(in(m.dst), 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, in(m.dst), m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on /%s: %w", m.fstype, m.dst, err)
		}
		if m.dst == "dev/pts" {
			if err := devNodes(l, in("dev")); err != nil {
				return err
			}
		}
	}
	if l.Systemd {
		if err := cgroupMounts(l, root); err != nil {
			return err
		}
	}
	return nil
}

// devNodes fills the container's /dev: binds of the host's harmless
// nodes (a user namespace may not mknod), the devpts ptmx, the console
// and the usual links.
func devNodes(l *launch, dev string) error {
	bind := func(src, dst string) error {
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		return nil
	}
	for _, d := range hostDevices {
		if err := bind("/dev/"+d, filepath.Join(dev, d)); err != nil {
			return err
		}
	}
	if l.Console != "" {
		if err := bind(l.Console, filepath.Join(dev, "console")); err != nil {
			return err
		}
	}
	links := [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}}
	for _, ln := range links {
		if err := os.Symlink(ln[0], filepath.Join(dev, ln[1])); err != nil {
			return err
		}
	}
	return nil
}

// cgroupMounts gives systemd the cgroup layout it expects from the host's:
// a tmpfs at /sys/fs/cgroup with the container's own cgroup (the cgroup
// namespace's root) of each v1 hierarchy, or the cgroup2 tree.
func cgroupMounts(l *launch, root string) error {
	cg := filepath.Join(root, "sys/fs/cgroup")
	if err := unix.Mount("tmpfs", cg, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on /sys/fs/cgroup: %w", err)
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// Unified host.
		return unix.Mount("cgroup2", cg, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	opts := map[string]string{}
	for _, d := range l.CgroupDirs {
		// d is /sys/fs/cgroup/<hierarchy>/...: the mount options name
		// the hierarchy's controllers.
		rel, err := filepath.Rel("/sys/fs/cgroup", d)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		h := strings.SplitN(rel, "/", 2)[0]
		opts[h] = h
	}
	opts["systemd"] = "none,name=systemd"
	for h, o := range opts {
		if h == "unified" {
			continue
		}
		dst := filepath.Join(cg, h)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("cgroup", dst, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, o); err != nil {
			return fmt.Errorf("mount cgroup %s: %w", o, err)
		}
	}
	return nil
}

// hardenProc makes /proc/sys read-only and masks what reaches the host's
// kernel from a privileged container's /proc.
func hardenProc(root string) error {
	proc := filepath.Join(root, "proc")
	for _, p := range []string{"sys", "sysrq-trigger", "irq", "bus", "fs"} {
		t := filepath.Join(proc, p)
		if _, err := os.Stat(t); err != nil {
			continue
		}
		if err := unix.Mount(t, t, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind /proc/%s: %w", p, err)
		}
		if err := unix.Mount("", t, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("make /proc/%s read-only: %w", p, err)
		}
	}
	for _, p := range maskedProc {
		t := filepath.Join(proc, p)
		if _, err := os.Stat(t); err != nil {
			continue
		}
		if err := unix.Mount("/dev/null", t, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", p, err)
		}
	}
	return nil
}

// pivot makes root the root of this mount namespace and detaches the old
// one (with the staging tmpfs).
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}
