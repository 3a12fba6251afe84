package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/internal/testutil"
	"vzd/spec"
)

// Crash tests re-execute the test binary with these set; the child runs
// Create and Mount and SIGKILLs itself at the named step.
const (
	envCrashStep   = "VZD_IMAGE_CRASH_STEP"
	envCrashPrefix = "VZD_IMAGE_CRASH_PREFIX"
	envCrashID     = "VZD_IMAGE_CRASH_ID"
	envCrashSrc    = "VZD_IMAGE_CRASH_SRC"
	// stepMkfsRunning kills the child while mkfs.ext4 is writing.
	stepMkfsRunning = "create:mkfs-running"
)

// killAfterStart runs a tool and SIGKILLs its own process as soon as the
// tool has started: the tool dies with it (Pdeathsig) mid-write.
type killAfterStart struct{}

func (killAfterStart) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
	return nil, nil
}

func TestMain(m *testing.M) {
	if step := os.Getenv(envCrashStep); step != "" {
		os.Exit(crashChild(step, os.Getenv(envCrashPrefix), os.Getenv(envCrashID)))
	}
	os.Exit(m.Run())
}

func crashChild(step, prefix, id string) int {
	paths := spec.Paths{Prefix: prefix}
	cfg := Config{Paths: paths}
	if step == stepMkfsRunning {
		cfg.Runner = killAfterStart{}
	}
	a, _ := New(cfg)
	a.step = func(name string) {
		if name == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		}
	}
	c := testContainer(paths, id)
	ctx := context.Background()
	if err := a.Create(ctx, c, os.Getenv(envCrashSrc)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := a.Mount(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0 // step never reached
}

func testContainer(paths spec.Paths, id string) *spec.Container {
	return &spec.Container{
		ID:      id,
		Private: filepath.Join(paths.PrivateBase(), id),
		Root:    filepath.Join(paths.RootBase(), id),
		Disk:    spec.Disk{Size: 128 << 20, Inodes: 8192},
		Source:  spec.Pos{File: filepath.Join(paths.Host("/etc/vz/conf"), id+".conf")},
	}
}

// rootEnv makes an Actuator over a fresh temporary prefix and removes
// every mount and loop device under it when the test ends, pass or fail.
func rootEnv(t *testing.T) (*Actuator, spec.Paths) {
	t.Helper()
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "mkfs.ext4")
	testutil.RequireTool(t, "resize2fs")
	testutil.RequireTool(t, "e2fsck")
	paths := spec.Paths{Prefix: t.TempDir(), ConfigDir: "/etc/vz/conf"}
	t.Cleanup(func() { cleanupUnder(t, paths.Prefix) })
	a, err := New(Config{Paths: paths, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return a, paths
}

// cleanupUnder unmounts (deepest first) and detaches whatever lies under
// prefix, and reports it: a test that leaks fails.
func cleanupUnder(t *testing.T, prefix string) {
	ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(prefix))
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].Mountpoint) > len(ms[j].Mountpoint) })
	for _, m := range ms {
		t.Errorf("leaked mount %s", m.Mountpoint)
		unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
	}
	loops, _ := Loops()
	for _, l := range loops {
		if strings.HasPrefix(l.BackingFile, prefix+"/") {
			t.Errorf("leaked loop device %s (%s)", l.Dev, l.BackingFile)
			if f, err := os.OpenFile(l.Dev, os.O_RDWR, 0); err == nil {
				unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
				f.Close()
			}
		}
	}
}

// loopsBacking counts the loop devices bound to img.
func loopsBacking(t *testing.T, img string) int {
	t.Helper()
	loops, err := Loops()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range loops {
		if l.BackingFile == realPath(img) {
			n++
		}
	}
	return n
}

func mustObserve(t *testing.T, a *Actuator, c *spec.Container) State {
	t.Helper()
	st, err := a.Observe(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCreateMountWriteRemount(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	st := mustObserve(t, a, c)
	if !st.Complete || st.Attached || st.Size != c.Disk.Size || st.Inodes < c.Disk.Inodes || !st.Clean {
		t.Fatalf("after Create: %+v", st)
	}
	if fi, _ := os.Stat(st.ImagePath); fi.Sys().(*syscall.Stat_t).Blocks*512 > 64<<20 {
		t.Errorf("image not sparse: %d bytes allocated", fi.Sys().(*syscall.Stat_t).Blocks*512)
	}
	for i := 0; i < 2; i++ { // Mount is idempotent
		if err := a.Mount(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	st = mustObserve(t, a, c)
	if !st.Attached || !st.Mounted || !st.RootMounted || loopsBacking(t, st.ImagePath) != 1 {
		t.Fatalf("after Mount: %+v (%d loops)", st, loopsBacking(t, st.ImagePath))
	}
	var sys unix.Stat_t
	if err := unix.Stat(st.LoopDev, &sys); err != nil || fmt.Sprintf("%d:%d", unix.Major(sys.Rdev), unix.Minor(sys.Rdev)) != st.DevNumber {
		t.Errorf("DevNumber %s does not match %s (%v)", st.DevNumber, st.LoopDev, err)
	}
	loops, _ := Loops()
	for _, l := range loops {
		if l.Dev == st.LoopDev && (!l.DirectIO || !l.Autoclear) {
			t.Errorf("loop %+v: want direct IO and autoclear", l)
		}
	}
	// The root is root/ of the file system.
	if err := os.WriteFile(filepath.Join(c.Root, "hello"), []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(stagingPath(c), RootDir, "hello")); err != nil || string(b) != "world" {
		t.Errorf("staging root/hello = %q, %v", b, err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	st = mustObserve(t, a, c)
	if st.Attached || st.Mounted || st.RootMounted || !st.Clean {
		t.Fatalf("after Unmount: %+v", st)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	if err := a.Create(ctx, c, ""); err != nil { // no-op: must not reformat
		t.Fatal(err)
	}
	// A file system marked as having errors is checked before mounting.
	if out, err := exec.Command("tune2fs", "-E", "force_fsck", st.ImagePath).CombinedOutput(); err != nil {
		t.Fatalf("tune2fs: %v: %s", err, out)
	}
	if st := mustObserve(t, a, c); st.Clean {
		t.Fatalf("force_fsck not seen: %+v", st)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Root, "hello")); err != nil || string(b) != "world" {
		t.Errorf("after remount hello = %q, %v", b, err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if st := mustObserve(t, a, c); !st.Clean {
		t.Errorf("not clean after check and unmount: %+v", st)
	}
	if n := a.forcedDetach.Load(); n != 0 {
		t.Errorf("autoclear did not detach on the last unmount (%d forced)", n)
	}
}

func TestRestartFindsAttachment(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	before := mustObserve(t, a, c)
	// A new agent: nothing in memory.
	b, _ := New(Config{Paths: paths, Log: testLogger(t)})
	t.Cleanup(func() { b.Unmount(ctx, c) })
	after := mustObserve(t, b, c)
	if after != before || !after.Mounted {
		t.Fatalf("restarted agent sees %+v, was %+v", after, before)
	}
	if err := b.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := loopsBacking(t, after.ImagePath); n != 1 {
		t.Errorf("%d loop devices back the image after a second Mount", n)
	}
	att, err := b.Attached(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := att[c.ID]; !ok || !s.Mounted || s.LoopDev != before.LoopDev {
		t.Errorf("Attached = %+v", att)
	}
	found, err := Scan(paths.PrivateBase())
	if err != nil || len(found) != 1 || len(found[0].MountPoints) != 2 {
		t.Errorf("Scan = %+v, %v; want one image mounted at staging and root", found, err)
	}
	if err := b.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func TestOfflineResize(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	inodes := mustObserve(t, a, c).Inodes
	c.Disk.Size = 256 << 20
	if p, err := a.Resize(ctx, c); err != nil || p {
		t.Fatalf("offline grow: %v, %v", p, err)
	}
	st := mustObserve(t, a, c)
	if st.Size != 256<<20 || st.FileSize != 256<<20 || st.PendingGrow {
		t.Errorf("after grow: %+v", st)
	}
	t.Logf("inodes %d -> %d (resize2fs adds whole groups)", inodes, st.Inodes)
	// Fill 100 MiB, then shrink below it: refused, nothing changed.
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	if err := os.WriteFile(filepath.Join(c.Root, "data"), bytes.Repeat([]byte{1}, 100<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Disk.Size = 64 << 20
	if p, err := a.Resize(ctx, c); err != nil || !p {
		t.Errorf("shrink while mounted: %v, %v; want pending", p, err)
	}
	if st := mustObserve(t, a, c); !st.PendingShrink {
		t.Errorf("after mounted shrink: %+v", st)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Resize(ctx, c); !errors.Is(err, ErrDoesNotFit) {
		t.Errorf("shrink below data: %v, want ErrDoesNotFit", err)
	}
	if st := mustObserve(t, a, c); st.Size != 256<<20 {
		t.Errorf("refused shrink changed size: %+v", st)
	}
	c.Disk.Size = 160 << 20
	if p, err := a.Resize(ctx, c); err != nil || p {
		t.Fatalf("shrink that fits: %v, %v", p, err)
	}
	if st := mustObserve(t, a, c); st.Size != 160<<20 || st.FileSize != 160<<20 || st.PendingShrink {
		t.Errorf("after shrink: %+v", st)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(c.Root, "data")); err != nil || fi.Size() != 100<<20 {
		t.Errorf("data after shrink: %v", err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
}

// TestOnlineGrow grows a mounted image. Where root lacks CAP_SYS_RESOURCE
// (this project's machines) the kernel refuses: the grow is pending and
// done at the next mount. Where it succeeds, nothing is pending.
func TestOnlineGrow(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	c.Disk.Size = 192 << 20
	pending, err := a.Resize(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	st := mustObserve(t, a, c)
	t.Logf("online grow pending=%v state=%+v", pending, st)
	if pending != st.PendingGrow || (pending && st.Size != 128<<20) || (!pending && st.Size != 192<<20) {
		t.Fatalf("pending=%v but %+v", pending, st)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if st := mustObserve(t, a, c); st.Size != 192<<20 || st.PendingGrow {
		t.Errorf("after remount: %+v", st)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func TestTemplateCreate(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	tmpl := testContainer(paths, testutil.UniqueName("tp"))
	tmpl.Disk.Size = 64 << 20
	if err := a.Create(ctx, tmpl, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(tmpl.Root, "etc"), 0o755)
	os.WriteFile(filepath.Join(tmpl.Root, "etc", "hostname"), []byte("tmpl\n"), 0o644)
	if err := a.Unmount(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	c := testContainer(paths, testutil.UniqueName("ct"))
	c.Disk.Size = 256 << 20
	if err := a.Create(ctx, c, imagePath(tmpl)); err != nil {
		t.Fatal(err)
	}
	if st := mustObserve(t, a, c); st.Size != 256<<20 || !st.Complete {
		t.Errorf("from template: %+v", st)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	if b, err := os.ReadFile(filepath.Join(c.Root, "etc", "hostname")); err != nil || string(b) != "tmpl\n" {
		t.Errorf("template file: %q, %v", b, err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A template that is not ext4 is refused.
	junk := filepath.Join(t.TempDir(), "junk.img")
	os.WriteFile(junk, make([]byte, 1<<20), 0o600)
	c2 := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c2, junk); !errors.Is(err, ErrNotExt4) {
		t.Errorf("junk template: %v", err)
	}
	if _, err := os.Lstat(c2.Private); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed create left %s", c2.Private)
	}
}

// toolCounter runs the e2fsprogs tools for real and counts the runs.
type toolCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *toolCounter) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	r.n[name]++
	r.mu.Unlock()
	return ExecRunner{}.Run(ctx, name, args...)
}

func (r *toolCounter) take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.n
	r.n = map[string]int{}
	return n
}

// TestTemplateCreatePresized: a template with a presized copy at the
// container's size is created from that copy with no resize2fs; at any
// other size, or when the presized copy is not right, from the template.
func TestTemplateCreatePresized(t *testing.T) {
	_, paths := rootEnv(t)
	tools := &toolCounter{n: map[string]int{}}
	a, err := New(Config{Paths: paths, Log: testLogger(t), Runner: tools})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	write := func(c *spec.Container, name, data string) {
		t.Helper()
		if err := a.Mount(ctx, c); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(c.Root, "etc"), 0o755)
		if err := os.WriteFile(filepath.Join(c.Root, "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := a.Unmount(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *spec.Container, name string) string {
		t.Helper()
		if err := a.Mount(ctx, c); err != nil {
			t.Fatal(err)
		}
		defer a.Unmount(ctx, c)
		b, _ := os.ReadFile(filepath.Join(c.Root, "etc", name))
		return string(b)
	}
	tmpl := testContainer(paths, testutil.UniqueName("tp"))
	tmpl.Disk.Size = 64 << 20
	if err := a.Create(ctx, tmpl, ""); err != nil {
		t.Fatal(err)
	}
	write(tmpl, "hostname", "tmpl\n")
	src := filepath.Join(t.TempDir(), "tmpl.img")
	if _, err := CopySparse(src, imagePath(tmpl)); err != nil {
		t.Fatal(err)
	}
	// The presized copy: the template grown to 256M, marked so that the
	// test can tell which one a container was copied from.
	ps := testContainer(paths, testutil.UniqueName("ps"))
	ps.Disk.Size = 256 << 20
	if err := a.Create(ctx, ps, src); err != nil {
		t.Fatal(err)
	}
	write(ps, "presized", "yes\n")
	if err := os.Rename(imagePath(ps), PresizedPath(src, 256<<20)); err != nil {
		t.Fatal(err)
	}
	if p := PresizedPath(src, 256<<20); !strings.HasSuffix(p, "/tmpl.268435456.img") {
		t.Fatalf("PresizedPath = %s", p)
	}
	// And one at the default size, which larger containers grow.
	pd := testContainer(paths, testutil.UniqueName("ps"))
	pd.Disk.Size = DefaultSize
	if err := a.Create(ctx, pd, src); err != nil {
		t.Fatal(err)
	}
	write(pd, "presized", "default\n")
	if err := os.Rename(imagePath(pd), PresizedPath(src, DefaultSize)); err != nil {
		t.Fatal(err)
	}
	tools.take()

	big := testContainer(paths, testutil.UniqueName("ct"))
	big.Disk.Size = DefaultSize + 256<<20
	if err := a.Create(ctx, big, src); err != nil {
		t.Fatal(err)
	}
	if n := tools.take(); n["resize2fs"] == 0 {
		t.Errorf("create above the default size ran %v, want resize2fs", n)
	}
	if st := mustObserve(t, a, big); st.Size != DefaultSize+256<<20 {
		t.Errorf("above the default size: %+v", st)
	}
	if got := read(big, "presized"); got != "default\n" {
		t.Errorf("not grown from the presized image at the default size: etc/presized = %q", got)
	}
	tools.take()

	c := testContainer(paths, testutil.UniqueName("ct"))
	c.Disk.Size = 256 << 20
	if err := a.Create(ctx, c, src); err != nil {
		t.Fatal(err)
	}
	if n := tools.take(); len(n) != 0 {
		t.Errorf("create at the presized size ran %v", n)
	}
	if st := mustObserve(t, a, c); st.Size != 256<<20 || !st.Complete {
		t.Errorf("from presized: %+v", st)
	}
	if got := read(c, "presized"); got != "yes\n" {
		t.Errorf("not copied from the presized image: etc/presized = %q", got)
	}
	if r, _ := readRecord(c); r.Source != src {
		t.Errorf("record source %q, want the template %q", r.Source, src)
	}

	// Another size: the template itself, resized.
	c2 := testContainer(paths, testutil.UniqueName("ct"))
	c2.Disk.Size = 192 << 20
	if err := a.Create(ctx, c2, src); err != nil {
		t.Fatal(err)
	}
	if n := tools.take(); n["resize2fs"] == 0 {
		t.Errorf("create at another size ran %v, want resize2fs", n)
	}
	if got := read(c2, "presized"); got != "" {
		t.Errorf("copied from a presized image at %d (%q), a container of %d", 256<<20, got, c2.Disk.Size)
	}

	// A presized file that is not what its name says is not used.
	os.Rename(PresizedPath(src, 256<<20), PresizedPath(src, 320<<20))
	c3 := testContainer(paths, testutil.UniqueName("ct"))
	c3.Disk.Size = 320 << 20
	if err := a.Create(ctx, c3, src); err != nil {
		t.Fatal(err)
	}
	if st := mustObserve(t, a, c3); st.Size != 320<<20 {
		t.Errorf("from a wrongly named presized image: %+v", st)
	}
	if got := read(c3, "presized"); got != "" {
		t.Errorf("copied from a presized image of the wrong size")
	}
	tools.take()
	// Nor is one that was not cleanly unmounted.
	if err := os.Rename(PresizedPath(src, 320<<20), PresizedPath(src, 256<<20)); err != nil {
		t.Fatal(err)
	}
	dirty := PresizedPath(src, 256<<20)
	f, err := os.OpenFile(dirty, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	f.ReadAt(b, sbOffset+0x3A)
	b[0] &^= stateValid
	f.WriteAt(b, sbOffset+0x3A)
	f.Close()
	c4 := testContainer(paths, testutil.UniqueName("ct"))
	c4.Disk.Size = 256 << 20
	if err := a.Create(ctx, c4, src); err != nil {
		t.Fatal(err)
	}
	if n := tools.take(); n["resize2fs"] == 0 {
		t.Errorf("create beside an unclean presized image ran %v, want resize2fs", n)
	}
	if got := read(c4, "presized"); got != "" {
		t.Errorf("copied from an unclean presized image")
	}
}

// TestTemplateInUseRefused: a template attached to a loop device, or
// mounted, is not copied, and the failed create leaves nothing.
func TestTemplateInUseRefused(t *testing.T) {
	a, paths := rootEnv(t)
	testutil.RequireTool(t, "losetup")
	ctx := context.Background()
	tmpl := testContainer(paths, testutil.UniqueName("tp"))
	tmpl.Disk.Size = 64 << 20
	if err := a.Create(ctx, tmpl, ""); err != nil {
		t.Fatal(err)
	}
	src := imagePath(tmpl)

	// Attached (read-only, not mounted): its superblock cannot tell.
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", src).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	detached := false
	detach := func() {
		if !detached {
			exec.Command("losetup", "--detach", dev).Run()
			detached = true
		}
	}
	t.Cleanup(detach)
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, src); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("create from an attached template: %v", err)
	}
	if _, err := os.Lstat(c.Private); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed create left %s", c.Private)
	}
	detach()

	// Mounted read-write: not clean.
	if err := a.Mount(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, tmpl) })
	if err := a.Create(ctx, c, src); err == nil || !strings.Contains(err.Error(), "not clean") {
		t.Errorf("create from a mounted template: %v", err)
	}
	if _, err := os.Lstat(c.Private); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed create left %s", c.Private)
	}
	if err := a.Unmount(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	// Unmounted again it is copied (checked first: it was mounted).
	if err := a.Create(ctx, c, src); err != nil {
		t.Fatal(err)
	}
}

func TestDestroy(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A link inside the tree must be removed, not followed.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "keep"), []byte("x"), 0o600)
	os.Symlink(outside, filepath.Join(c.Root, "evil"))
	if err := a.Destroy(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{c.Private, c.Root} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("destroy followed a link: %v", err)
	}
	if err := a.Destroy(ctx, c); err != nil {
		t.Errorf("Destroy of absent: %v", err)
	}
}

// TestDiskFull creates an image on a /vz that is a small, nearly full
// tmpfs: the error says there is no space, and no private area, temporary
// image or loop device is left.
func TestDiskFull(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	vz := paths.Host("/vz")
	os.MkdirAll(vz, 0o755)
	if err := unix.Mount("tmpfs", vz, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(vz, unix.MNT_DETACH) })
	os.MkdirAll(paths.PrivateBase(), 0o755)
	// Leave about 64 KiB.
	f, _ := os.Create(filepath.Join(vz, "filler"))
	f.Write(bytes.Repeat([]byte{1}, 8<<20-64<<10))
	f.Close()
	c := testContainer(paths, testutil.UniqueName("ct"))
	err := a.Create(ctx, c, "")
	t.Logf("create on a full disk: %v", err)
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("got %v, want an ENOSPC error saying so", err)
	}
	if _, err := os.Lstat(c.Private); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private area left after failed create: %v", err)
	}
	if err := a.Mount(ctx, c); !errors.Is(err, ErrNoImage) {
		t.Errorf("Mount after failed create: %v, want ErrNoImage", err)
	}
	if st := mustObserve(t, a, c); st.Exists || st.Partial || st.Attached {
		t.Errorf("state after failed create: %+v", st)
	}
	// With space again, the same Create succeeds: a failed Create leaves
	// nothing in the way.
	if err := os.Remove(filepath.Join(vz, "filler")); err != nil {
		t.Fatal(err)
	}
	c.Disk.Size = 64 << 20
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatalf("Create after freeing space: %v", err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(vz, 0); err != nil {
		t.Errorf("unmount /vz (busy = leaked loop device?): %v", err)
	}
}

// TestForeignAttachReused: an image someone attached by hand (losetup,
// no autoclear) is mounted through that device, not a second one, and
// Unmount detaches it.
func TestForeignAttachReused(t *testing.T) {
	a, paths := rootEnv(t)
	testutil.RequireTool(t, "losetup")
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", imagePath(c)).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(string(out))
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	st := mustObserve(t, a, c)
	if st.LoopDev != dev || loopsBacking(t, imagePath(c)) != 1 || !st.Mounted {
		t.Errorf("mounted %+v, want through %s only", st, dev)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := loopsBacking(t, imagePath(c)); n != 0 {
		t.Errorf("%d loop devices after Unmount", n)
	}
}

// TestPendingShrinkAppliedAtMount: a shrink asked while mounted waits, and
// the next Mount does it.
func TestPendingShrinkAppliedAtMount(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	c.Disk.Size = 96 << 20
	if p, err := a.Resize(ctx, c); err != nil || !p {
		t.Fatalf("shrink while mounted: %v, %v; want pending", p, err)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if st := mustObserve(t, a, c); st.Size != 96<<20 || st.PendingShrink || st.FileSize != 96<<20 {
		t.Errorf("after remount: %+v", st)
	}
	if err := a.Unmount(ctx, c); err != nil {
		t.Fatal(err)
	}
}

// TestCrashConverges kills a process running Create and Mount at each
// durable step; a new pass must converge to one mounted image on one loop
// device, and the killed process must leak no loop device.
func TestCrashConverges(t *testing.T) {
	steps := []string{
		"create:truncated", stepMkfsRunning, "create:built", "create:renamed", "create:record",
		"mount:attached", "mount:staging", "mount:root",
		"template/create:copied", "template/create:built", "template/create:renamed",
	}
	for _, step := range steps {
		t.Run(strings.NewReplacer(":", "_", "/", "_").Replace(step), func(t *testing.T) {
			a, paths := rootEnv(t)
			ctx := context.Background()
			c := testContainer(paths, testutil.UniqueName("ct"))
			src := ""
			if s, ok := strings.CutPrefix(step, "template/"); ok {
				step = s
				tp := testContainer(paths, testutil.UniqueName("tp"))
				tp.Disk.Size = 64 << 20
				if err := a.Create(ctx, tp, ""); err != nil {
					t.Fatal(err)
				}
				src = imagePath(tp)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envCrashStep+"="+step, envCrashPrefix+"="+paths.Prefix,
				envCrashID+"="+c.ID, envCrashSrc+"="+src)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die at %s: %v: %s", step, err, out)
			}
			t.Cleanup(func() { a.Unmount(ctx, c) })
			img := imagePath(c)
			if !strings.HasPrefix(step, "mount:staging") && !strings.HasPrefix(step, "mount:root") {
				// Nothing holds the device: autoclear must have freed it.
				deadline := time.Now().Add(5 * time.Second)
				for loopsBacking(t, img) != 0 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if n := loopsBacking(t, img); n != 0 {
					t.Errorf("killed at %s: %d loop devices leaked", step, n)
				}
			}
			if err := a.Create(ctx, c, src); err != nil {
				t.Fatal(err)
			}
			if err := a.Mount(ctx, c); err != nil {
				t.Fatal(err)
			}
			st := mustObserve(t, a, c)
			if !st.Complete || !st.Mounted || !st.RootMounted || st.Partial || loopsBacking(t, img) != 1 || st.Size != c.Disk.Size {
				t.Fatalf("after crash at %s: %+v, %d loops", step, st, loopsBacking(t, img))
			}
			if err := os.WriteFile(filepath.Join(c.Root, "x"), []byte("y"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := a.Unmount(ctx, c); err != nil {
				t.Fatal(err)
			}
			if n := loopsBacking(t, img); n != 0 {
				t.Errorf("%d loop devices after Unmount", n)
			}
		})
	}
}

// TestDestroyUnderLinkedBase: a private base behind a link (/vz ->
// /data/vz is common) is still the container's own and is removed.
func TestDestroyUnderLinkedBase(t *testing.T) {
	a, paths := rootEnv(t)
	ctx := context.Background()
	real := filepath.Join(paths.Prefix, "data-vz")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, paths.Host("/vz")); err != nil {
		t.Fatal(err)
	}
	c := testContainer(paths, testutil.UniqueName("ct"))
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Mount(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Unmount(ctx, c) })
	if st := mustObserve(t, a, c); !st.Mounted || !st.RootMounted {
		t.Fatalf("through a linked base: %+v", st)
	}
	if att, err := a.Attached(ctx); err != nil || !att[c.ID].Mounted {
		t.Errorf("Attached through a linked base = %+v, %v", att, err)
	}
	if err := a.Destroy(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(real, "private", c.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private area left: %v", err)
	}
}
