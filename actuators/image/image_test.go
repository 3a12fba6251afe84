package image

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vzd/spec"
)

// fakeRunner records the commands it is asked to run and answers with fn.
type fakeRunner struct {
	calls []string
	fn    func(name string, args []string) ([]byte, error)
}

func (f *fakeRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if f.fn == nil {
		return nil, nil
	}
	return f.fn(name, args)
}

// exitErr is a non-zero exit with a code, as *exec.ExitError has.
type exitErr int

func (e exitErr) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitCode() int { return int(e) }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writeFakeImage makes a sparse file of blocks 4 KiB blocks with an ext4
// superblock saying so (state: the s_state field).
func writeFakeImage(t testing.TB, path string, blocks uint64, state uint16) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	b := fakeSuperblock(blocks, state, incompatExtents)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(blocks * 4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, sbOffset); err != nil {
		t.Fatal(err)
	}
}

func fakeSuperblock(blocks uint64, state uint16, incompat uint32) []byte {
	b := make([]byte, sbSize)
	le := binary.LittleEndian
	le.PutUint32(b[0x00:], 1024) // inodes
	le.PutUint32(b[0x04:], uint32(blocks))
	le.PutUint32(b[0x0C:], uint32(blocks/2))
	le.PutUint32(b[0x18:], 2) // 4096
	le.PutUint16(b[0x38:], ext4Magic)
	le.PutUint16(b[0x3A:], state)
	le.PutUint32(b[0x60:], incompat)
	return b
}

func newFake(t *testing.T, r Runner) (*Actuator, *spec.Container) {
	t.Helper()
	paths := spec.Paths{Prefix: t.TempDir(), ConfigDir: "/etc/vz/conf"}
	a, err := New(Config{Paths: paths, Log: testLogger(t), Runner: r})
	if err != nil {
		t.Fatal(err)
	}
	c := &spec.Container{
		ID:      "101",
		Private: filepath.Join(paths.PrivateBase(), "101"),
		Root:    filepath.Join(paths.RootBase(), "101"),
		Disk:    spec.Disk{Size: 64 << 20, Inodes: 4096},
		Source:  spec.Pos{File: "/etc/vz/conf/101.hcl"},
	}
	return a, c
}

func TestParseSuperblock(t *testing.T) {
	s, err := parseSuperblock(fakeSuperblock(1000, stateValid, incompatExtents))
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != 1000*4096 || s.Inodes != 1024 || !s.Clean() {
		t.Errorf("got %+v", s)
	}
	if !s.Checked() {
		t.Error("never mounted, clean: resize2fs needs no e2fsck -f")
	}
	mounted := fakeSuperblock(1000, stateValid, incompatExtents)
	binary.LittleEndian.PutUint32(mounted[0x2C:], 200) // s_mtime
	binary.LittleEndian.PutUint32(mounted[0x40:], 100) // s_lastcheck
	if s, _ := parseSuperblock(mounted); s.Checked() {
		t.Error("mounted after its last check reported checked")
	}
	if s, _ := parseSuperblock(fakeSuperblock(1000, 0, incompatExtents)); s.Clean() {
		t.Error("state 0 (mounted or crashed) reported clean")
	}
	if s, _ := parseSuperblock(fakeSuperblock(1000, stateValid, incompatExtents|incompatRecover)); s.Clean() {
		t.Error("journal needing recovery reported clean")
	}
	for name, b := range map[string][]byte{
		"zeros": make([]byte, sbSize),
		"ext3":  fakeSuperblock(1000, stateValid, 0),
		"short": make([]byte, 10),
	} {
		if _, err := parseSuperblock(b); !errors.Is(err, ErrNotExt4) {
			t.Errorf("%s: got %v, want ErrNotExt4", name, err)
		}
	}
}

func TestDecideResize(t *testing.T) {
	for _, tc := range []struct {
		cur, want         uint64
		attached, mounted bool
		act               resizeAction
	}{
		{10, 10, true, true, resizeNone},
		{10, 20, true, true, resizeGrowOnline},
		{20, 10, true, true, resizeShrinkPending},
		{10, 20, true, false, resizeBusy},
		{10, 20, false, false, resizeOffline},
		{20, 10, false, false, resizeOffline},
	} {
		if got := decideResize(tc.cur, tc.want, tc.attached, tc.mounted); got != tc.act {
			t.Errorf("decideResize(%+v) = %v, want %v", tc, got, tc.act)
		}
	}
}

func TestCreateRefusesNotExt4(t *testing.T) {
	r := &fakeRunner{}
	a, c := newFake(t, r)
	img := imagePath(c)
	os.MkdirAll(filepath.Dir(img), 0o700)
	junk := []byte(strings.Repeat("not a file system ", 500))
	if err := os.WriteFile(img, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	err := a.Create(context.Background(), c, "")
	if !errors.Is(err, ErrNotExt4) {
		t.Fatalf("Create over junk: %v, want ErrNotExt4", err)
	}
	if len(r.calls) != 0 {
		t.Errorf("ran %q on a non-ext4 image", r.calls)
	}
	if b, _ := os.ReadFile(img); string(b) != string(junk) {
		t.Error("image changed")
	}
	st, err := a.Observe(context.Background(), c)
	if err != nil || !st.Exists || st.Complete {
		t.Errorf("Observe = %+v, %v; want exists, not complete", st, err)
	}
}

func TestCreateMkfsMissingNamesPackage(t *testing.T) {
	r := &fakeRunner{fn: func(name string, args []string) ([]byte, error) {
		return nil, &exec.Error{Name: name, Err: exec.ErrNotFound}
	}}
	a, c := newFake(t, r)
	err := a.Create(context.Background(), c, "")
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "e2fsprogs") || !strings.Contains(err.Error(), "mkfs.ext4") {
		t.Fatalf("got %v, want ErrToolMissing naming mkfs.ext4 and e2fsprogs", err)
	}
	if _, err := os.Lstat(c.Private); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed create left the private area: %v", err)
	}
}

// mkfsFake pretends to be mkfs.ext4: it writes a superblock into the file
// named by the last argument.
func mkfsFake(t *testing.T) func(string, []string) ([]byte, error) {
	return func(name string, args []string) ([]byte, error) {
		if name != "mkfs.ext4" {
			return nil, nil
		}
		f, err := os.OpenFile(args[len(args)-1], os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, _ := f.Stat()
		_, err = f.WriteAt(fakeSuperblock(uint64(fi.Size())/4096, stateValid, incompatExtents), sbOffset)
		return nil, err
	}
}

func TestCreateFormatsOnceAndLinksConfig(t *testing.T) {
	r := &fakeRunner{}
	r.fn = mkfsFake(t)
	a, c := newFake(t, r)
	ctx := context.Background()
	// A half-built image from a crashed run is rebuilt.
	tmp := imagePath(c) + tmpSuffix
	os.MkdirAll(filepath.Dir(tmp), 0o700)
	os.WriteFile(tmp, []byte("half"), 0o600)
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 || !strings.Contains(r.calls[0], "-N 4096") ||
		!strings.Contains(r.calls[0], "lazy_itable_init=1") || !strings.HasSuffix(r.calls[0], tmp) {
		t.Errorf("mkfs calls = %q", r.calls)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary image left: %v", err)
	}
	if l, err := os.Readlink(filepath.Join(c.Private, confLink)); err != nil || l != c.Source.File {
		t.Errorf("ve.conf -> %q, %v", l, err)
	}
	rec, err := readRecord(c)
	if err != nil || rec.CreatedSize != c.Disk.Size {
		t.Errorf("record = %+v, %v", rec, err)
	}
	// A complete image is never formatted again.
	if err := a.Create(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 {
		t.Errorf("second Create ran %q", r.calls[1:])
	}
}

func TestGrowOnlineRefusedIsPending(t *testing.T) {
	refuse := true
	r := &fakeRunner{fn: func(name string, args []string) ([]byte, error) {
		if refuse {
			return []byte("resize2fs 1.47.0 (5-Feb-2023)\nFilesystem at /dev/loop3 is mounted on /x; on-line resizing required\nresize2fs: Permission denied to resize filesystem\n"), exitErr(1)
		}
		return []byte("The filesystem on /dev/loop3 is now 65536 (4k) blocks long.\n"), nil
	}}
	a, c := newFake(t, r)
	var capDev string
	a.setCapacity = func(dev string) error { capDev = dev; return nil }
	writeFakeImage(t, imagePath(c), 8192, stateValid)
	writeRecord(c, record{CreatedSize: 8192 * 4096})
	want := uint64(65536 * 4096)
	pending, err := a.growOnline(context.Background(), c, imagePath(c), "/dev/loop3", want)
	if err != nil || !pending {
		t.Fatalf("growOnline = %v, %v; want pending", pending, err)
	}
	if capDev != "/dev/loop3" {
		t.Errorf("LOOP_SET_CAPACITY on %q", capDev)
	}
	if fi, _ := os.Stat(imagePath(c)); uint64(fi.Size()) != want {
		t.Errorf("file is %d bytes, want %d", fi.Size(), want)
	}
	st, _ := a.Observe(context.Background(), c)
	if !st.PendingGrow || st.PendingSize != want {
		t.Errorf("Observe = %+v, want pending grow to %d", st, want)
	}
	// Any other failure is an error, not pending.
	r.fn = func(string, []string) ([]byte, error) { return []byte("resize2fs: No space left"), exitErr(1) }
	if p, err := a.growOnline(context.Background(), c, imagePath(c), "/dev/loop3", want); err == nil || p {
		t.Errorf("other failure: %v, %v", p, err)
	}
	// Accepted: nothing pending any more.
	refuse = false
	r.fn = func(string, []string) ([]byte, error) { return nil, nil }
	if p, err := a.growOnline(context.Background(), c, imagePath(c), "/dev/loop3", want); err != nil || p {
		t.Errorf("accepted grow: %v, %v", p, err)
	}
	if rec, _ := readRecord(c); rec.PendingSize != 0 {
		t.Errorf("pending left: %+v", rec)
	}
}

func TestShrinkRefusedWhenDataDoesNotFit(t *testing.T) {
	r := &fakeRunner{fn: func(name string, args []string) ([]byte, error) {
		if name == "resize2fs" && args[0] == "-P" {
			return []byte("resize2fs 1.47.0 (5-Feb-2023)\nEstimated minimum size of the filesystem: 9000\n"), nil
		}
		return nil, nil
	}}
	a, c := newFake(t, r)
	writeFakeImage(t, imagePath(c), 16384, stateValid)
	err := a.resizeOffline(context.Background(), c, imagePath(c), 8192*4096)
	if !errors.Is(err, ErrDoesNotFit) {
		t.Fatalf("got %v, want ErrDoesNotFit", err)
	}
	for _, call := range r.calls {
		if strings.HasPrefix(call, "resize2fs ") && !strings.HasPrefix(call, "resize2fs -P") {
			t.Errorf("resized anyway: %q", call)
		}
	}
	if fi, _ := os.Stat(imagePath(c)); fi.Size() != 16384*4096 {
		t.Errorf("file truncated to %d", fi.Size())
	}
	// What fits is done: resize2fs, then the file is cut.
	r.calls = nil
	if err := a.resizeOffline(context.Background(), c, imagePath(c), 10000*4096); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.calls, "; "); !strings.Contains(got, "resize2fs "+imagePath(c)+" 40000K") {
		t.Errorf("calls = %s", got)
	}
	if fi, _ := os.Stat(imagePath(c)); fi.Size() != 10000*4096 {
		t.Errorf("file is %d bytes after shrink", fi.Size())
	}
}

func TestPrepareOfflineChecksUncleanFS(t *testing.T) {
	r := &fakeRunner{fn: func(name string, args []string) ([]byte, error) {
		if name == "e2fsck" {
			return []byte("fixed"), exitErr(1) // 1 = errors corrected: success
		}
		return nil, nil
	}}
	a, c := newFake(t, r)
	writeFakeImage(t, imagePath(c), 16384, 0)
	sb, err := readSuperblock(imagePath(c))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.prepareOffline(context.Background(), c, imagePath(c), sb); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) == 0 || r.calls[0] != "e2fsck -p "+imagePath(c) {
		t.Errorf("calls = %q, want e2fsck -p first", r.calls)
	}
	// Exit 4 (errors left uncorrected) fails the mount.
	r.fn = func(string, []string) ([]byte, error) { return []byte("UNEXPECTED INCONSISTENCY"), exitErr(4) }
	if err := a.prepareOffline(context.Background(), c, imagePath(c), sb); err == nil {
		t.Error("uncorrected errors accepted")
	}
}

func TestParseMinSize(t *testing.T) {
	n, err := parseMinSize([]byte("resize2fs 1.47.0 (5-Feb-2023)\nEstimated minimum size of the filesystem: 12345\n"))
	if err != nil || n != 12345 {
		t.Errorf("got %d, %v", n, err)
	}
	if _, err := parseMinSize([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestLoopExhaustionReported(t *testing.T) {
	a, c := newFake(t, &fakeRunner{})
	writeFakeImage(t, imagePath(c), 1024, stateValid)
	// /dev/null answers LOOP_CTL_GET_FREE with an error, as an exhausted
	// loop-control does (ENOSPC) or one at its max_loop limit.
	a.loopControl = os.DevNull
	if _, _, err := a.attach(imagePath(c)); !errors.Is(err, ErrNoLoop) {
		t.Errorf("got %v, want ErrNoLoop", err)
	}
}

func TestDestroyRefusesOutsidePrivateBase(t *testing.T) {
	a, c := newFake(t, &fakeRunner{})
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	os.WriteFile(keep, []byte("x"), 0o600)
	os.MkdirAll(filepath.Dir(c.Private), 0o755)
	if err := os.Symlink(outside, c.Private); err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(context.Background(), c); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Destroy through a link: %v, want ErrUnsafePath", err)
	}
	c2 := *c
	c2.Private = outside
	if err := a.Destroy(context.Background(), &c2); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Destroy outside the base: %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("file outside removed: %v", err)
	}
}

func TestExecRunnerMissingTool(t *testing.T) {
	a, _ := newFake(t, ExecRunner{})
	_, err := a.runTool(context.Background(), nil, "vzd-no-such-tool", "-x")
	if !errors.Is(err, ErrToolMissing) || !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "e2fsprogs") {
		t.Errorf("got %v, want ErrToolMissing wrapping exec.ErrNotFound", err)
	}
	out, err := a.runTool(context.Background(), []int{1}, "sh", "-c", "echo fixed; exit 1")
	if err != nil || strings.TrimSpace(string(out)) != "fixed" {
		t.Errorf("exit 1 allowed: %q, %v", out, err)
	}
	if _, err := a.runTool(context.Background(), nil, "sh", "-c", "echo broken >&2; exit 4"); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("failure without its output: %v", err)
	}
}
