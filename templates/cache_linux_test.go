package templates

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"vzd/internal/testutil"
	"vzd/spec"
)

func requireBuild(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "mkfs.ext4")
	testutil.RequireTool(t, "debugfs")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.RequireTool(t, "busybox")
	}
}

// testLogger sends the cache's logs to t.Log and counts builds.
type buildCounter struct{ n atomic.Int64 }

func (b *buildCounter) handler(t *testing.T) slog.Handler {
	return &countHandler{Handler: slog.NewTextHandler(tWriter{t}, nil), b: b}
}

type countHandler struct {
	slog.Handler
	b *buildCounter
}

func (h *countHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "building template" {
		h.b.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// debugfs runs a debugfs request against an image, read-only.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", req, img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// debugfs prints "File not found" on stderr and still exits 0.
	out = append(out, strings.ReplaceAll(stderr.String(), "debugfs 1.47.0 (5-Feb-2023)\n", "")...)
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v: %s", req, img, err, out)
	}
	return string(out)
}

func TestBusyboxBuildImage(t *testing.T) {
	requireBuild(t)
	var builds buildCounter
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, slog.New(builds.handler(t)))
	t.Cleanup(func() { c.Remove("busybox") })

	path, err := c.Image(t.Context(), ".busybox", NewProgress(tWriter{t}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, filepath.Join(c.Dir(), "busybox-")) || !strings.HasSuffix(path, ".img") {
		t.Errorf("image path %s", path)
	}
	out, err := exec.Command("blkid", "-o", "value", "-s", "TYPE", path).Output()
	if err != nil || strings.TrimSpace(string(out)) != "ext4" {
		t.Errorf("blkid %s = %q, %v; want ext4", path, out, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	// The tree is under root/, owned by root, with busybox, init and its config.
	stat := debugfs(t, path, "stat /root/bin/busybox")
	if !strings.Contains(stat, "Type: regular") || !strings.Contains(stat, "Mode:  0755") || !strings.Contains(stat, "User:     0") {
		t.Errorf("root/bin/busybox:\n%s", stat)
	}
	for _, f := range []string{"/root/etc/inittab", "/root/etc/init.d/rcS", "/root/sbin/init", "/root/bin/sh", "/root/sbin/ip", "/root/sbin/ifconfig", "/root/sbin/udhcpc"} {
		if out := debugfs(t, path, "stat "+f); strings.Contains(out, "File not found") {
			t.Errorf("%s missing from the image", f)
		}
	}
	if out := debugfs(t, path, "cat /root/etc/inittab"); !strings.Contains(out, "::sysinit:/etc/init.d/rcS") {
		t.Errorf("inittab:\n%s", out)
	}
	if out := debugfs(t, path, "stat /root/dev/null"); !strings.Contains(out, "character special") || !strings.Contains(out, "Device major/minor number: 01:03") {
		t.Errorf("/root/dev/null:\n%s", out)
	}
	if out := debugfs(t, path, "stat /root/tmp"); !strings.Contains(out, "Mode:  01777") {
		t.Errorf("/root/tmp not sticky:\n%s", out)
	}
	if out := debugfs(t, path, "stat /root/sbin/init"); !strings.Contains(out, "Type: symlink") {
		t.Errorf("/root/sbin/init not a symlink:\n%s", out)
	}
	// Sized tightly: a few MiB of tree, inodes at 16 KiB each, a journal.
	st, _ := os.Stat(path)
	if st.Size() > 32<<20 {
		t.Errorf("image is %d MiB, want tight", st.Size()>>20)
	}

	in, err := c.Info("busybox")
	if err != nil || !in.Built || in.Path != path || in.Tarball == "" || in.BuiltAt.IsZero() || in.InitPath != "/sbin/init" {
		t.Fatalf("Info = %+v, %v", in, err)
	}
	// The presized copy: the same file system grown to the default disk
	// size, sparse, checked clean and never mounted (so copies of it can
	// be resized again without an e2fsck -f).
	if in.Presized != PresizedPath(path, PresizedSize) {
		t.Errorf("Info.Presized = %q, want %q", in.Presized, PresizedPath(path, PresizedSize))
	}
	if st, err := os.Stat(in.Presized); err != nil || st.Size() != PresizedSize {
		t.Errorf("presized image: %v, %v", st, err)
	} else if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 64<<20 {
		t.Errorf("presized image allocates %d MiB, want it sparse", blocks>>20)
	}
	if out, err := exec.Command("e2fsck", "-fn", in.Presized).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn presized: %v\n%s", err, out)
	}
	stats := debugfs(t, in.Presized, "stats")
	if !strings.Contains(stats, fmt.Sprintf("Block count:              %d\n", PresizedSize/4096)) ||
		!strings.Contains(stats, "Last mount time:          n/a") {
		t.Errorf("presized image:\n%.1500s", stats)
	}
	if out := debugfs(t, in.Presized, "cat /root/etc/inittab"); !strings.Contains(out, "::sysinit:/etc/init.d/rcS") {
		t.Errorf("presized inittab:\n%s", out)
	}
	out, err = exec.Command("tar", "-tzvf", in.Tarball).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "./bin/busybox") || !strings.Contains(string(out), "./sbin/init -> /bin/busybox") {
		t.Errorf("tarball listing: %v\n%.2000s", err, out)
	}

	// A second call finds the cache and does not rebuild.
	path2, err := c.Image(t.Context(), "busybox", nil)
	if err != nil || path2 != path {
		t.Fatalf("second Image = %s, %v", path2, err)
	}
	if n := builds.n.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
	// A new cache object over the same directory (another process) too.
	c2 := NewCache(spec.Paths{Prefix: filepath.Dir(filepath.Dir(filepath.Dir(c.Dir())))}, slog.New(builds.handler(t)))
	if p, err := c2.Image(t.Context(), "busybox", nil); err != nil || p != path {
		t.Errorf("Image from a second cache = %s, %v", p, err)
	}
	if n := builds.n.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}

	list, err := c.List()
	if err != nil || len(list) != 2 || list[0].Name != "busybox" || !list[0].Built || list[1].Built {
		t.Errorf("List = %+v, %v", list, err)
	}
	// A forced rebuild replaces the entry in place.
	if _, err := c.Build(t.Context(), "busybox", true, nil); err != nil {
		t.Fatal(err)
	}
	if n := builds.n.Load(); n != 2 {
		t.Errorf("%d builds after force, want 2", n)
	}
	if err := c.Remove("busybox"); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.Dir(), "busybox-*")); len(m) != 0 {
		t.Errorf("after Remove: %v", m)
	}
	if in, _ := c.Info("busybox"); in.Built {
		t.Error("Info says built after Remove")
	}
	if err := c.Remove("busybox"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// TestPresizedAddedToEarlierBuild: an entry built before builds made the
// presized copy (same definition, same hash) gets it at the next Image,
// without a rebuild.
func TestPresizedAddedToEarlierBuild(t *testing.T) {
	requireBuild(t)
	var builds buildCounter
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, slog.New(builds.handler(t)))
	path, err := c.Image(t.Context(), "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := PresizedPath(path, PresizedSize)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p+".tmp", []byte("left by a crash"), 0o644)
	if in, _ := c.Info("busybox"); !in.Built || in.Presized != "" {
		t.Fatalf("Info without the presized file = %+v", in)
	}
	if got, err := c.Image(t.Context(), "busybox", nil); err != nil || got != path {
		t.Fatalf("Image = %s, %v", got, err)
	}
	if n := builds.n.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
	if in, _ := c.Info("busybox"); in.Presized != p {
		t.Errorf("Info.Presized = %q, want %q", in.Presized, p)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != PresizedSize {
		t.Errorf("presized image: %v, %v", st, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn presized: %v\n%s", err, out)
	}
	if _, err := os.Stat(p + ".tmp"); err == nil {
		t.Error("the crashed presize's leftover is still there")
	}
}

func TestParallelImageBuildsOnce(t *testing.T) {
	requireBuild(t)
	var builds buildCounter
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, slog.New(builds.handler(t)))
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = c.Image(t.Context(), "busybox", nil) })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("Image #%d = %s, %v", i, paths[i], errs[i])
		}
	}
	if n := builds.n.Load(); n != 1 {
		t.Errorf("%d builds for 4 parallel Image calls, want 1", n)
	}
}

// slowProgress cancels the build once mkfs.ext4 has started.
type cancelAt struct {
	phase  string
	cancel context.CancelFunc
	seen   atomic.Bool
}

func (p *cancelAt) Start(phase string, total int64) {
	if strings.HasPrefix(phase, p.phase) {
		p.seen.Store(true)
		p.cancel()
	}
}
func (p *cancelAt) Update(int64) {}
func (p *cancelAt) Done()        {}

func TestInterruptedBuildLeavesNothing(t *testing.T) {
	requireBuild(t)
	for _, phase := range []string{"build", "mkfs.ext4", "presize", "tarball"} {
		t.Run(phase, func(t *testing.T) {
			c := NewCache(spec.Paths{Prefix: t.TempDir()}, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			p := &cancelAt{phase: phase, cancel: cancel}
			_, err := c.Image(ctx, "busybox", p)
			if err == nil {
				t.Fatal("Image succeeded despite cancel")
			}
			if !p.seen.Load() {
				t.Fatalf("phase %s never started", phase)
			}
			ents, _ := os.ReadDir(c.Dir())
			for _, e := range ents {
				if e.Name() != ".busybox.lock" {
					t.Errorf("left behind: %s", e.Name())
				}
			}
			mounts, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mounts), c.Dir()) {
				t.Errorf("staging still mounted under %s", c.Dir())
			}
			// And the next call builds it properly.
			if _, err := c.Image(t.Context(), "busybox", nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLockWaitIsCancellable(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockFile(t.Context(), filepath.Join(dir, "l"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, filepath.Join(dir, "l")); err == nil {
		t.Fatal("second lock taken while the first is held")
	}
	unlock()
	u2, err := lockFile(t.Context(), filepath.Join(dir, "l"))
	if err != nil {
		t.Fatal(err)
	}
	u2()
}

func TestChrootRunIsolated(t *testing.T) {
	requireBuild(t)
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, nil)
	root := filepath.Join(t.TempDir(), "root")
	os.Mkdir(root, 0o755)
	if err := c.buildBusybox(t.Context(), root); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := ChrootRun(t.Context(), root, []string{"/bin/sh", "-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'; ip -o link | wc -l; touch /marker"}, nil, &out, &out)
	if err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	// PID 1 of its own namespace, alone with ls/grep; only lo.
	f := strings.Fields(out.String())
	if len(f) != 3 || f[0] != "pid=1" || f[2] != "1" {
		t.Errorf("inside the chroot: %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(root, "marker")); err != nil {
		t.Errorf("command did not run in the root: %v", err)
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), root) {
		t.Error("chroot mounts leaked into the host namespace")
	}
}

// TestLeftoversOfKilledBuildIgnoredAndRemoved: an agent killed mid-build
// leaves a mounted staging tree, a .img.tmp, or even a renamed .img
// without its .json marker. None of it counts as built; the next build
// removes it all.
func TestLeftoversOfKilledBuildIgnoredAndRemoved(t *testing.T) {
	requireBuild(t)
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	o, _ := c.Lookup("busybox")
	base := c.base(o)
	staging := filepath.Join(c.Dir(), ".build-busybox-"+o.DefHash())
	if err := os.MkdirAll(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", staging).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", staging).Run() })
	os.WriteFile(filepath.Join(staging, "junk"), []byte("x"), 0o644)
	os.WriteFile(base+".img.tmp", []byte("half"), 0o644)
	os.WriteFile(PresizedPath(base+".img", PresizedSize)+".tmp", []byte("half"), 0o644)
	os.WriteFile(base+".img", []byte("not marked"), 0o644)
	os.WriteFile(filepath.Join(c.Dir(), "busybox-0123456789ab.img"), []byte("old definition"), 0o644)

	if in, _ := c.Info("busybox"); in.Built {
		t.Fatal("an image without its marker counts as built")
	}
	path, err := c.Image(t.Context(), "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	if out := debugfs(t, path, "stat /root/bin/busybox"); !strings.Contains(out, "Type: regular") {
		t.Errorf("the unmarked image was kept instead of rebuilt:\n%s", out)
	}
	ents, _ := os.ReadDir(c.Dir())
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{".busybox.lock", filepath.Base(PresizedPath(base+".img", PresizedSize)),
		filepath.Base(base) + ".img", filepath.Base(base) + ".json", filepath.Base(base) + ".tar.gz"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("cache dir = %v, want %v", names, want)
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), staging) {
		t.Error("staging tmpfs still mounted")
	}
}
