package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The init stage (stage 2 of start, running as the namespaced root of the
// new namespaces) is a small interpreter in nsexec.c: the agent decides
// here, in Go, every step of building the container's view of the system,
// and sends the steps as a program of NUL-separated tokens with the root
// mount fd. The interpreter runs them in order and execs the container's
// init; on a failure it sends back which step failed and why. Keeping the
// decisions in Go keeps them readable and testable; keeping their
// execution in C keeps a Go runtime start off the start path.
//
// Ops and their arguments (see run_program in nsexec.c):
//
//	unshare FLAGS                      unshare(2)
//	mount SRC DST FSTYPE FLAGS DATA    mount(2); "" is NULL for SRC, FSTYPE, DATA
//	attach DST                         move_mount the received root fd onto DST
//	mkdirp PATH                        mkdir -p, mode 0755
//	touch PATH                         create an empty file (a bind target)
//	symlink TARGET PATH
//	hostname NAME
//	write PATH VALUE                   write VALUE into an existing file (sysctls)
//	pivot DIR                          pivot_root into DIR, detach the old root
//	capdrop CAP                        drop CAP from the bounding set
//	exec N ARG0 … ARGN-1               close fds > 2 on exec, execve with a clean env

// Capabilities no container keeps in its bounding set, as LXC and
// systemd-nspawn drop them: in a user namespace they are useless anyway,
// for a privileged container they are the obvious ways out.
var dropCaps = []int{unix.CAP_SYS_MODULE, unix.CAP_SYS_RAWIO, unix.CAP_SYS_TIME, unix.CAP_MAC_ADMIN, unix.CAP_MAC_OVERRIDE}

// Host device nodes bind-mounted into the container's /dev: harmless ones
// (no block device, no memory, no console of the host).
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// Masked in a privileged container's /proc (as LXC and nspawn do).
var maskedProc = []string{"kcore", "kmsg", "sysrq-trigger", "timer_list", "keys", "latency_stats", "sched_debug"}

// Made read-only in a privileged container's /proc.
var readOnlyProc = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}

// stagingRoot is where the init stage attaches the container's root: on a
// private tmpfs over /tmp, because the container's root may not be able to
// walk the host path to c.Root (a 0700 directory owned by host root). The
// tmpfs goes away with the old root.
const stagingRoot = "/tmp/root"

type program [][]string

func (p *program) op(args ...string) { *p = append(*p, args) }

func (p *program) mount(src, dst, fstype string, flags uintptr, data string) {
	p.op("mount", src, dst, fstype, strconv.FormatUint(uint64(flags), 10), data)
}

// encode joins every token with a NUL terminator.
func (p program) encode() []byte {
	var b []byte
	for _, op := range p {
		for _, tok := range op {
			b = append(b, tok...)
			b = append(b, 0)
		}
	}
	return b
}

// initProgram is what the init stage does for l.
func initProgram(l *launch) (program, error) {
	if len(l.Init) == 0 {
		return nil, fmt.Errorf("no init")
	}
	var p program
	root := stagingRoot
	in := func(rel string) string { return filepath.Join(root, rel) }
	// The agent has put the stage in the container's cgroup: this makes
	// it the root of the stage's cgroup namespace.
	p.op("unshare", strconv.Itoa(unix.CLONE_NEWCGROUP))
	p.mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	p.mount("vzd", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700,size=64k")
	p.op("mkdirp", root)
	p.op("attach", root)

	const common = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	p.op("mkdirp", in("proc"))
	p.mount("proc", in("proc"), "proc", common, "")
	// Ours to mount fresh: we own the network namespace. Read-only.
	p.op("mkdirp", in("sys"))
	p.mount("sysfs", in("sys"), "sysfs", common|unix.MS_RDONLY, "")
	p.op("mkdirp", in("dev"))
	p.mount("tmpfs", in("dev"), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k")
	p.op("mkdirp", in("dev/pts"))
	p.mount("devpts", in("dev/pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
	// A user namespace may not mknod: bind the host's harmless nodes.
	binds := slices.Clone(hostDevices)
	for _, d := range binds {
		p.op("touch", in("dev/"+d))
		p.mount("/dev/"+d, in("dev/"+d), "", unix.MS_BIND, "")
	}
	if l.Console != "" {
		p.op("touch", in("dev/console"))
		p.mount(l.Console, in("dev/console"), "", unix.MS_BIND, "")
	}
	for _, ln := range [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}} {
		p.op("symlink", ln[0], in("dev/"+ln[1]))
	}
	p.op("mkdirp", in("dev/shm"))
	p.mount("tmpfs", in("dev/shm"), "tmpfs", common, "mode=1777")
	p.op("mkdirp", in("dev/mqueue"))
	p.mount("mqueue", in("dev/mqueue"), "mqueue", common, "")
	p.op("mkdirp", in("run"))
	p.mount("tmpfs", in("run"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755")
	if l.Systemd {
		p.op("mkdirp", in("tmp"))
		p.mount("tmpfs", in("tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
		cgroupMounts(&p, l, in("sys/fs/cgroup"))
	}
	p.op("hostname", l.Hostname)
	keys := make([]string, 0, len(l.Sysctl))
	for k := range l.Sysctl {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "/\x00") {
			return nil, fmt.Errorf("sysctl %q: bad name", k)
		}
		p.op("write", in("proc/sys/"+strings.ReplaceAll(k, ".", "/")), l.Sysctl[k])
	}
	if l.Privileged {
		hardenProc(&p, in("proc"))
	}
	p.op("pivot", root)
	for _, c := range dropCaps {
		p.op("capdrop", strconv.Itoa(c))
	}
	p.op(append([]string{"exec", strconv.Itoa(len(l.Init))}, l.Init...)...)
	return p, nil
}

// cgroupMounts gives systemd the cgroup layout it expects from the host's:
// a tmpfs at /sys/fs/cgroup with the container's own cgroup (the cgroup
// namespace's root) of each v1 hierarchy, or the cgroup2 tree.
func cgroupMounts(p *program, l *launch, cg string) {
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	p.mount("tmpfs", cg, "tmpfs", flags, "mode=755")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		p.mount("cgroup2", cg, "cgroup2", flags, "")
		return
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
		if h != "unified" {
			opts[h] = h
		}
	}
	opts["systemd"] = "none,name=systemd"
	hs := make([]string, 0, len(opts))
	for h := range opts {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	for _, h := range hs {
		p.op("mkdirp", filepath.Join(cg, h))
		p.mount("cgroup", filepath.Join(cg, h), "cgroup", flags, opts[h])
	}
}

// hardenProc makes /proc/sys and friends read-only and masks what reaches
// the host's kernel from a privileged container's /proc.
func hardenProc(p *program, proc string) {
	for _, e := range readOnlyProc {
		if _, err := os.Stat("/proc/" + e); err != nil {
			continue
		}
		t := filepath.Join(proc, e)
		p.mount(t, t, "", unix.MS_BIND|unix.MS_REC, "")
		p.mount("", t, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	for _, e := range maskedProc {
		if _, err := os.Stat("/proc/" + e); err != nil {
			continue
		}
		p.mount("/dev/null", filepath.Join(proc, e), "", unix.MS_BIND, "")
	}
}
