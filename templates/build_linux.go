package templates

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// stagingSize bounds the tmpfs a tree is built in; tmpfs only uses what
// is written.
const stagingSize = "8g"

// buildLocked builds o: the tree in a tmpfs (the host root fs creates
// files slowly), then the image with mkfs.ext4 -d, its presized copy,
// then the tarball, then the marker. The template's lock must be held.
func (c *Cache) buildLocked(ctx context.Context, o OS, progress Progress) (info Info, retErr error) {
	start := time.Now()
	base := c.base(o)
	staging := filepath.Join(c.dir, ".build-"+o.Name+"-"+o.DefHash())
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return Info{}, err
	}
	if err := unix.Mount("tmpfs", staging, "tmpfs", unix.MS_NOSUID, "size="+stagingSize+",mode=0755"); err != nil {
		os.Remove(staging)
		return Info{}, &os.PathError{Op: "mount tmpfs", Path: staging, Err: err}
	}
	defer func() {
		unmountTree(staging)
		os.Remove(staging)
	}()
	defer func() {
		if retErr != nil {
			for _, ext := range []string{".img.tmp", ".tar.gz.tmp", ".json"} {
				os.Remove(base + ext)
			}
			os.Remove(PresizedPath(base+".img", PresizedSize) + ".tmp")
		}
	}()
	root := filepath.Join(staging, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return Info{}, err
	}
	c.log.Info("building template", "template", o.Name, "defhash", o.DefHash(), "builder", o.Builder)

	progress.Start("build "+o.Name, c.estimate(o))
	var peak int64
	stop := pollProgress(progress, func() int64 {
		u := tmpfsUsed(staging)
		peak = max(peak, u)
		return u
	})
	var err error
	switch o.Builder {
	case BuilderBusybox:
		err = c.buildBusybox(ctx, root)
	case BuilderDebootstrap:
		err = c.buildDebootstrap(ctx, o, root)
	default:
		err = fmt.Errorf("unknown builder %q", o.Builder)
	}
	for i, script := range o.PostInstall {
		if err != nil {
			break
		}
		var out bytes.Buffer
		if err = ChrootRun(ctx, root, []string{"/bin/sh", "-c", script}, nil, &out, &out); err != nil {
			err = fmt.Errorf("post-install script %d: %w: %s", i+1, err, tail(out.Bytes()))
		}
	}
	stop()
	if err != nil {
		return Info{}, err
	}
	progress.Done()

	bytesUsed, files, err := treeUsage(root)
	if err != nil {
		return Info{}, fmt.Errorf("measure tree: %w", err)
	}
	if err := makeImage(ctx, staging, base+".img", bytesUsed, files, progress); err != nil {
		return Info{}, err
	}
	defer func() {
		if retErr != nil {
			os.Remove(base + ".img")
		}
	}()
	presized := ""
	if st, err := os.Stat(base + ".img"); err != nil {
		return Info{}, err
	} else if st.Size() < PresizedSize {
		presized = PresizedPath(base+".img", PresizedSize)
		if err := makePresized(ctx, base+".img", presized, PresizedSize, progress); err != nil {
			return Info{}, err
		}
		defer func() {
			if retErr != nil {
				os.Remove(presized)
			}
		}()
	}
	if err := writeTarball(ctx, root, base+".tar.gz", bytesUsed, progress); err != nil {
		return Info{}, err
	}
	defer func() {
		if retErr != nil {
			os.Remove(base + ".tar.gz")
		}
	}()
	st, err := os.Stat(base + ".img")
	if err != nil {
		return Info{}, err
	}
	info = c.unbuilt(o)
	info.Built, info.Path, info.Tarball, info.Size = true, base+".img", base+".tar.gz", st.Size()
	info.Presized = presized
	info.TreeBytes, info.TreeFiles, info.StagingPeak = bytesUsed, files, peak
	info.BuiltAt = time.Now().UTC().Truncate(time.Second)
	info.BuildTime = time.Since(start).Round(time.Millisecond).String()
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	// The marker is written last: without it the entry does not exist.
	if err := writeInfo(base+".json", info); err != nil {
		return Info{}, fmt.Errorf("write %s.json: %w", base, err)
	}
	syncDir(c.dir)
	// Older definitions of the same name are of no further use: containers
	// own copies, never the cache image itself.
	if err := c.removeFiles(o.Name, o.DefHash()); err != nil {
		c.log.Warn("remove old template builds", "template", o.Name, "err", err)
	}
	c.log.Info("template built", "template", o.Name, "path", info.Path, "size", info.Size,
		"files", files, "took", info.BuildTime)
	return info, nil
}

// estimate is the expected size of the staging tree at its largest (with
// downloaded packages) for the progress bar: the last build's when known.
func (c *Cache) estimate(o OS) int64 {
	if m, _ := filepath.Glob(filepath.Join(c.dir, o.Name+"-*.json")); len(m) > 0 {
		for _, p := range m {
			var in Info
			if b, err := os.ReadFile(p); err == nil && jsonUnmarshal(b, &in) == nil && in.StagingPeak > 0 {
				return in.StagingPeak
			}
		}
	}
	return o.EstimatedSize
}

// pollProgress reports f() to p every 200 ms until stop is called.
func pollProgress(p Progress, f func() int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				p.Update(f())
				return
			case <-t.C:
				p.Update(f())
			}
		}
	}()
	return func() { close(done); <-finished }
}

func tmpfsUsed(dir string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// buildBusybox lays out a minimal system around the host's static busybox:
// busybox init with an inittab and rcS, a shell, the networking applets.
func (c *Cache) buildBusybox(ctx context.Context, root string) error {
	if err := requireStatic(c.BusyboxPath); err != nil {
		return err
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{"bin", 0o755}, {"sbin", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"etc/init.d", 0o755}, {"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555},
		{"run", 0o755}, {"tmp", 0o1777}, {"root", 0o700}, {"home", 0o755},
		{"mnt", 0o755}, {"var/log", 0o755}, {"var/tmp", 0o1777}, {"var/lib", 0o755},
	} {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode|chmodExtra(d.mode)); err != nil {
			return err
		}
	}
	if err := copyFile(c.BusyboxPath, filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, c.BusyboxPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || strings.Contains(applet, "..") {
			continue
		}
		p := filepath.Join(root, applet)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	if err := os.Symlink("../run", filepath.Join(root, "var/run")); err != nil {
		return err
	}
	for _, f := range busyboxFiles {
		if err := os.WriteFile(filepath.Join(root, f.path), []byte(f.data), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(root, f.path), f.mode); err != nil {
			return err
		}
	}
	// The few device nodes a system expects before anything mounts /dev;
	// the runtime normally mounts its own /dev over them.
	for _, d := range []struct {
		name         string
		mode         uint32
		major, minor uint32
	}{
		{"null", 0o666, 1, 3}, {"zero", 0o666, 1, 5}, {"full", 0o666, 1, 7},
		{"random", 0o666, 1, 8}, {"urandom", 0o666, 1, 9}, {"tty", 0o666, 5, 0},
		{"console", 0o600, 5, 1},
	} {
		p := filepath.Join(root, "dev", d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|d.mode, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return &os.PathError{Op: "mknod", Path: p, Err: err}
		}
		if err := os.Chmod(p, os.FileMode(d.mode)); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func chmodExtra(m os.FileMode) os.FileMode {
	if m&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// requireStatic fails unless path is a statically linked ELF: a dynamic
// busybox would not run inside a tree without its libraries.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox %s: %w (install busybox-static)", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is dynamically linked (install busybox-static)", path)
		}
	}
	return nil
}

var busyboxFiles = []struct {
	path string
	data string
	mode os.FileMode
}{
	{"etc/inittab", `# vzd busybox template: busybox init reads this.
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
::ctrlaltdel:/sbin/reboot
::restart:/sbin/init
`, 0o644},
	{"etc/init.d/rcS", `#!/bin/sh
# vzd busybox template: bring up the basics, then start /etc/init.d/S*.
# (Debian's busybox-static has no mountpoint applet.)
mounted() { grep -q " $1 " /proc/mounts; }
[ -e /proc/self ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs -o ro sysfs /sys 2>/dev/null
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
[ -s /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up 2>/dev/null
for s in /etc/init.d/S[0-9]*; do [ -x "$s" ] && "$s" start; done
exit 0
`, 0o755},
	{"etc/init.d/rcK", `#!/bin/sh
# vzd busybox template: stop /etc/init.d/S* in reverse order.
for s in $(ls -r /etc/init.d/S[0-9]* 2>/dev/null); do [ -x "$s" ] && "$s" stop; done
exit 0
`, 0o755},
	{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644},
	{"etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644},
	{"etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640},
	{"etc/hostname", "localhost\n", 0o644},
	{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644},
	{"etc/resolv.conf", "", 0o644},
	{"etc/fstab", "", 0o644},
	{"etc/profile", "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n", 0o644},
	{"etc/os-release", "NAME=BusyBox\nID=busybox\nPRETTY_NAME=\"BusyBox (vzd template)\"\n", 0o644},
}

// buildDebootstrap runs debootstrap from the host's mirror in a private
// mount namespace, so the /proc and /sys it mounts vanish with it.
func (c *Cache) buildDebootstrap(ctx context.Context, o OS, root string) error {
	m, err := HostMirror(c.EtcApt)
	if err != nil {
		return err
	}
	args := []string{"--variant=" + o.Variant, "--components=main", "--arch=" + debArch(o.Arch)}
	if len(o.Packages) > 0 {
		args = append(args, "--include="+strings.Join(o.Packages, ","))
	}
	if m.Keyring != "" {
		args = append(args, "--keyring="+m.Keyring)
	}
	args = append(args, o.Suite, root, m.URI)
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	// Pdeathsig: an agent killed mid-build must not leave debootstrap
	// writing into a staging tree the next build removes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	c.log.Debug("running debootstrap", "args", args)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("debootstrap: %w: %s", err, tail(out.Bytes()))
	}
	sources := fmt.Sprintf("deb %s %s main\ndeb %s %s-updates main\n", m.URI, o.Suite, m.URI, o.Suite)
	if m.Security != "" {
		sources += fmt.Sprintf("deb %s %s-security main\n", m.Security, o.Suite)
	}
	return os.WriteFile(filepath.Join(root, "etc/apt/sources.list"), []byte(sources), 0o644)
}

func debArch(a string) string {
	switch a {
	case "x86_64", "":
		return "amd64"
	case "aarch64":
		return "arm64"
	}
	return a
}

// ChrootRun runs argv inside root as in a stopped container: chroot, in
// new mount, pid and network namespaces with a fresh /proc and a small
// /dev of its own (null, zero, full, random, urandom, tty; never the
// host's disks). The pid namespace means nothing it starts outlives it;
// the empty network namespace means nothing it starts listens on the host.
// It runs as the host's root: use it on trees the node trusts (templates
// being built, stopped containers); a running container's own exec runs
// in its user namespace instead.
func ChrootRun(ctx context.Context, root string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	const setup = `set -e
r=$1; shift
mount -t proc proc "$r/proc"
# A /dev of its own with the harmless nodes, not the host's (no disks).
mount -t tmpfs -o mode=755,nosuid,size=64k tmpfs "$r/dev"
mk() { mknod -m 666 "$r/dev/$1" c "$2" "$3"; }
mk null 1 3; mk zero 1 5; mk full 1 7; mk random 1 8; mk urandom 1 9; mk tty 5 0
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mkdir "$r/dev/pts" "$r/dev/shm"
exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", setup, "sh", root}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS,
		Cloneflags:   syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		// Its pid namespace dies with it, and it dies with us.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// unmountTree lazily unmounts everything at or below dir (leftovers of an
// interrupted build).
func unmountTree(dir string) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return
	}
	// Deepest first.
	for i := len(mounts) - 1; i >= 0; i-- {
		unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}
