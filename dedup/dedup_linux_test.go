package dedup

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/internal/testutil"
	"vzd/spec"
)

// node is a scratch node: an ext4 image mounted under t.TempDir() (a real
// block file system, so page-cache residency means something), holding the
// containers' "images" as plain directories and the store as a plain
// directory.
type node struct {
	t      *testing.T
	prefix string
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "mkfs.ext4")
	dir := t.TempDir()
	img := filepath.Join(dir, "node.img")
	if err := makeImage(context.Background(), img, 512<<20); err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(dir, "n")
	if err := os.Mkdir(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	dev, hold, err := attachLoop(img)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Mount(dev, prefix, "ext4", 0, "")
	hold.Close()
	if err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() { unmountUnder(t, prefix) })
	return &node{t: t, prefix: prefix}
}

// unmountUnder unmounts everything at or below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Errorf("mountinfo: %v", err)
		return
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].Mountpoint) > len(ms[j].Mountpoint) })
	for _, m := range ms {
		if err := unix.Unmount(m.Mountpoint, 0); err != nil {
			t.Errorf("unmount %s: %v", m.Mountpoint, err)
			unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (n *node) cache(mod func(*spec.DedupConfig)) *Cache {
	n.t.Helper()
	d := Defaults()
	if mod != nil {
		mod(&d)
	}
	c, err := New(Config{Paths: spec.Paths{Prefix: n.prefix}, Dedup: d, Log: testLog(n.t), PlainDir: true})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// fsDir is the stand-in for a container's mounted image.
func (n *node) fsDir(id string) string { return filepath.Join(n.prefix, "vz/private", id, "mnt") }

func (n *node) container(id string) *spec.Container {
	return &spec.Container{ID: id, Root: filepath.Join(n.prefix, "vz/root", id), Privileged: true}
}

func randBytes(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// capV2 is a security.capability value granting cap_net_raw (13)
// permitted and effective.
func capV2() []byte {
	v := make([]byte, 20)
	binary.LittleEndian.PutUint32(v[0:], 0x02000001)
	binary.LittleEndian.PutUint32(v[4:], 1<<13)
	return v
}

var fixedTime = time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC)

// makeTree writes a small OS-like tree into fsDir/root: shared files
// identical in every container made with the same seed, plus one of its
// own.
func makeTree(t *testing.T, fsDir string, own uint64) {
	t.Helper()
	base := filepath.Join(fsDir, "root")
	files := []struct {
		path     string
		data     []byte
		mode     uint32
		uid, gid int
	}{
		{"usr/bin/tool", randBytes(1, 3<<20), 0o755, 0, 0},
		{"usr/bin/ping", randBytes(2, 64<<10), 0o755, 0, 0},
		{"usr/bin/su", randBytes(3, 64<<10), 0o4755, 0, 0},
		{"usr/lib/libx.so", randBytes(4, 1<<20), 0o644, 1000, 1001},
		{"etc/small.conf", []byte("tiny\n"), 0o644, 0, 0},
		{"usr/lib/own.bin", randBytes(100+own, 128<<10), 0o644, 0, 0},
		{"home/data.bin", randBytes(5, 256<<10), 0o644, 0, 0}, // not a scanned dir
	}
	for _, f := range files {
		p := filepath.Join(base, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	ping := filepath.Join(base, "usr/bin/ping")
	if err := unix.Lsetxattr(ping, "security.capability", capV2(), 0); err != nil {
		t.Fatalf("set capability: %v", err)
	}
	if err := unix.Lsetxattr(ping, "user.note", []byte("kept"), 0); err != nil {
		t.Fatalf("set user xattr: %v", err)
	}
	if err := os.Chmod(filepath.Join(base, "usr/lib"), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"usr/bin/tool", "usr/bin/ping", "usr/bin/su", "usr/lib/libx.so", "usr/lib", "usr/bin", "usr"} {
		if err := os.Chtimes(filepath.Join(base, d), fixedTime, fixedTime); err != nil {
			t.Fatal(err)
		}
	}
}

func (n *node) trees(ids ...string) map[string]string {
	m := map[string]string{}
	for i, id := range ids {
		fsDir := n.fsDir(id)
		if _, err := os.Stat(filepath.Join(fsDir, "root")); err != nil {
			makeTree(n.t, fsDir, uint64(i))
		}
		m[id] = fsDir
	}
	return m
}

func mount(t *testing.T, m *Mounter, c *spec.Container, fsDir string) {
	t.Helper()
	if err := m.MountRoot(context.Background(), c, fsDir); err != nil {
		t.Fatalf("mount root of %s: %v", c.ID, err)
	}
	t.Cleanup(func() { m.UnmountRoot(context.Background(), c) })
}

func fstype(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil || len(ms) == 0 {
		t.Fatalf("%s not mounted: %v", dir, err)
	}
	return ms[len(ms)-1].FSType
}

// stubIn reports whether the container's META has a sparse metacopy stub
// for rel (a block may hold its xattrs, not its data).
func stubIn(fsDir, rel string) bool {
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(fsDir, "meta", rel), &st) != nil {
		return false
	}
	_, err := getXattr(filepath.Join(fsDir, "meta", rel), xattrOvlRedi)
	return err == nil && st.Blocks*512 < st.Size
}

func sha(b []byte) string { s := sha1.Sum(b); return hex.EncodeToString(s[:]) }

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// view lists a mounted tree: path → mode, owner, size, mtime, content
// digest, xattrs. Two equal views are the same tree to a container.
func view(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		s := []string{
			"mode=" + hex.EncodeToString([]byte{byte(st.Mode >> 24), byte(st.Mode >> 16), byte(st.Mode >> 8), byte(st.Mode)}),
			"uid=" + itoa(int64(st.Uid)), "gid=" + itoa(int64(st.Gid)), "mtime=" + itoa(st.Mtim.Nano()),
		}
		if d.Type().IsRegular() {
			s = append(s, "size="+itoa(st.Size), "sha1="+sha(mustRead(t, p)))
		}
		names, _ := listXattrs(p)
		sort.Strings(names)
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") {
				continue // ours and overlayfs's; not visible in a container's user namespace
			}
			v, _ := getXattr(p, n)
			s = append(s, n+"="+hex.EncodeToString(v))
		}
		out[rel] = strings.Join(s, " ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func diffViews(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k+": "+v+" | "+b[k])
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k+": (absent) | "+v)
		}
	}
	sort.Strings(d)
	return d
}

// TestShareAndIsolate: two containers from one template share objects,
// read through both mounts fills the page cache once (with the object, not
// the containers' own copies), metadata is kept, and writes, upgrades and
// deletes stay in the container that made them. Without the cache the
// images show the same trees.
func TestShareAndIsolate(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	trees := n.trees("a", "b")
	st, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	// tool, ping, su, libx.so are shared and big enough; own.bin is not
	// shared, small.conf is too small, home/ is not scanned.
	if st.Ingested != 4 || st.Stubs != 8 || st.Containers != 2 {
		t.Fatalf("scan: %+v, want 4 objects and 8 stubs", st)
	}
	// Views of the images alone, before any overlay.
	before := map[string]map[string]string{}
	for id, fsDir := range trees {
		before[id] = view(t, filepath.Join(fsDir, "root"))
	}

	m := c.Mounter()
	ca, cb := n.container("a"), n.container("b")
	mount(t, m, ca, trees["a"])
	mount(t, m, cb, trees["b"])
	for _, ct := range []*spec.Container{ca, cb} {
		if got := fstype(t, ct.Root); got != "overlay" {
			t.Fatalf("%s root is %s, want overlay", ct.ID, got)
		}
		if d := diffViews(before[ct.ID], view(t, ct.Root)); len(d) > 0 {
			t.Fatalf("%s: mounted view differs from its image:\n%s", ct.ID, strings.Join(d, "\n"))
		}
		if !stubIn(trees[ct.ID], "usr/bin/tool") {
			t.Fatalf("%s: usr/bin/tool is not a stub", ct.ID)
		}
	}
	// File capabilities and set-id bits survive (view compared them; check
	// explicitly that they were there to compare).
	if v, err := getXattr(filepath.Join(ca.Root, "usr/bin/ping"), "security.capability"); err != nil || !bytes.Equal(v, capV2()) {
		t.Fatalf("capability through overlay: %x, %v", v, err)
	}
	var sst unix.Stat_t
	if err := unix.Lstat(filepath.Join(cb.Root, "usr/bin/su"), &sst); err != nil || sst.Mode&unix.S_ISUID == 0 {
		t.Fatalf("su lost its setuid bit: %o %v", sst.Mode, err)
	}

	// One page-cache copy: drop the object and both containers' own copies,
	// read the file through both containers, and only the object is cached.
	tool := sha(randBytes(1, 3<<20))
	obj := c.objectPath(tool)
	paths := []string{obj, filepath.Join(trees["a"], "root/usr/bin/tool"), filepath.Join(trees["b"], "root/usr/bin/tool")}
	for _, p := range paths {
		testutil.DropPages(t, p)
	}
	for _, ct := range []*spec.Container{ca, cb} {
		if got := sha(mustRead(t, filepath.Join(ct.Root, "usr/bin/tool"))); got != tool {
			t.Fatalf("%s reads wrong content", ct.ID)
		}
	}
	in, total := testutil.Resident(t, obj)
	if in != total {
		t.Errorf("object resident %d/%d pages, want all", in, total)
	}
	for _, p := range paths[1:] {
		if in, _ := testutil.Resident(t, p); in != 0 {
			t.Errorf("%s: %d pages cached, want 0 (served from the object)", p, in)
		}
	}

	// A write in a stays in a.
	f, err := os.OpenFile(filepath.Join(ca.Root, "usr/bin/tool"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("patched"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if sha(mustRead(t, filepath.Join(cb.Root, "usr/bin/tool"))) != tool {
		t.Fatal("a write in a changed b's view")
	}
	if sha(mustRead(t, obj)) != tool || sha(mustRead(t, filepath.Join(trees["a"], "root/usr/bin/tool"))) != tool {
		t.Fatal("a write in a changed the object or a's base")
	}
	// An upgrade in b: new file renamed over a cached one.
	newLib := []byte("new library version")
	tmp := filepath.Join(cb.Root, "usr/lib/.libx.so.dpkg-new")
	if err := os.WriteFile(tmp, newLib, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cb.Root, "usr/lib/libx.so")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(cb.Root, "usr/lib/libx.so")), newLib) {
		t.Fatal("upgrade not visible in b")
	}
	if sha(mustRead(t, filepath.Join(ca.Root, "usr/lib/libx.so"))) != sha(randBytes(4, 1<<20)) {
		t.Fatal("upgrade in b changed a")
	}
	// A delete in b, a chmod in a (a metadata-only copy-up).
	if err := os.Remove(filepath.Join(cb.Root, "usr/bin/ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ca.Root, "usr/bin/ping")); err != nil {
		t.Fatal("delete in b removed a's file")
	}
	if err := os.Chmod(filepath.Join(ca.Root, "usr/bin/su"), 0o700); err != nil {
		t.Fatal(err)
	}

	// The containers' views now, through the cache.
	after := map[string]map[string]string{"a": view(t, ca.Root), "b": view(t, cb.Root)}
	if err := m.UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	if err := m.UnmountRoot(context.Background(), cb); err != nil {
		t.Fatal(err)
	}
	// The images alone (no cache at all) show exactly the same trees.
	plain := PlainMounter(testLog(t))
	for _, ct := range []*spec.Container{ca, cb} {
		mount(t, plain, ct, trees[ct.ID])
		if got := fstype(t, ct.Root); got != "overlay" {
			t.Fatalf("%s after a run with dedup: root is %s, want overlay(delta, root)", ct.ID, got)
		}
		if d := diffViews(after[ct.ID], view(t, ct.Root)); len(d) > 0 {
			t.Fatalf("%s: view without the cache differs:\n%s", ct.ID, strings.Join(d, "\n"))
		}
		if err := plain.UnmountRoot(context.Background(), ct); err != nil {
			t.Fatal(err)
		}
	}
	// And with the cache again, the same.
	for _, ct := range []*spec.Container{ca, cb} {
		mount(t, m, ct, trees[ct.ID])
		if d := diffViews(after[ct.ID], view(t, ct.Root)); len(d) > 0 {
			t.Fatalf("%s: view with the cache after remount differs:\n%s", ct.ID, strings.Join(d, "\n"))
		}
	}
	s, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Objects != 4 || s.Pinned != 4 || len(s.Containers) != 2 || s.SavedBytes == 0 || s.Hits < 8 {
		t.Fatalf("stats: %+v", s)
	}
}

// TestSecondScanHashesNothing: digests recorded in xattrs are reused while
// a file's size and mtime are unchanged.
func TestSecondScanHashesNothing(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	trees := n.trees("a", "b", "c")
	first, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	if first.HashedBytes == 0 || first.HashedFiles != 15 || first.Duration <= 0 {
		t.Fatalf("first scan: %+v, want 15 files hashed", first)
	}
	second, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	if second.HashedBytes != 0 || second.HashedFiles != 0 || second.ReusedDigests != 15 || second.Ingested != 0 || second.MetaBuilt != 0 {
		t.Fatalf("second scan: %+v, want nothing hashed, ingested or rebuilt", second)
	}
	// A changed file is hashed again (and only it).
	p := filepath.Join(trees["c"], "root/usr/lib/own.bin")
	if err := os.WriteFile(p, randBytes(77, 128<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	if third.HashedFiles != 1 || third.HashedBytes != 128<<10 {
		t.Fatalf("third scan: %+v, want one file hashed", third)
	}
}

// TestEvictUnderPressure: a full store evicts the least recently used
// objects no mounted container uses; pinned ones stay, and a file that
// cannot get room is simply not cached.
func TestEvictUnderPressure(t *testing.T) {
	n := newNode(t)
	// Room for a's and b's shared files (3 MiB + 1 MiB + 2×64 KiB) but not
	// for another 3 MiB file on top.
	c := n.cache(func(d *spec.DedupConfig) { d.CacheSize = 5 << 20 })
	ab := n.trees("a", "b")
	if st, err := c.Scan(context.Background(), ab); err != nil || st.Ingested != 4 {
		t.Fatalf("scan a b: %+v %v", st, err)
	}
	ca := n.container("a")
	mount(t, c.Mounter(), ca, ab["a"])

	// d and e share a different 3 MiB file.
	de := map[string]string{}
	for _, id := range []string{"d", "e"} {
		fsDir := n.fsDir(id)
		p := filepath.Join(fsDir, "root/opt/big")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, randBytes(9, 3<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		de[id] = fsDir
	}
	st, err := c.Scan(context.Background(), de)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoRoom != 1 || st.Ingested != 0 {
		t.Fatalf("scan d e while a pins the store: %+v, want the file left uncached", st)
	}
	for _, p := range []string{"usr/bin/tool", "usr/lib/libx.so"} {
		if got := sha(mustRead(t, filepath.Join(ca.Root, p))); got == "" {
			t.Fatal("unreachable")
		}
	}
	if err := c.Mounter().UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	// Now nothing is pinned: the scan evicts what it must and stores big.
	st, err = c.Scan(context.Background(), de)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ingested != 1 || st.NoRoom != 0 {
		t.Fatalf("scan d e after a stopped: %+v", st)
	}
	if _, err := os.Stat(c.objectPath(sha(randBytes(9, 3<<20)))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.objectPath(sha(randBytes(1, 3<<20)))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("tool object should be evicted: %v", err)
	}
	// a's next mount drops the stubs of evicted objects and shows its own files.
	mount(t, c.Mounter(), ca, ab["a"])
	if got := sha(mustRead(t, filepath.Join(ca.Root, "usr/bin/tool"))); got != sha(randBytes(1, 3<<20)) {
		t.Fatal("a reads wrong tool after eviction")
	}
	if stubIn(ab["a"], "usr/bin/tool") {
		t.Fatal("stub of an evicted object kept")
	}

	// Explicit eviction spares pinned objects: d is mounted, a is not.
	if err := c.Mounter().UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	cd := n.container("d")
	mount(t, c.Mounter(), cd, de["d"])
	before, _ := c.Stats(context.Background())
	freed, err := c.Evict(context.Background(), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := c.Stats(context.Background())
	if freed == 0 || after.Objects != after.Pinned || after.Pinned != before.Pinned || after.Pinned == 0 {
		t.Fatalf("evict: freed %d, before %+v, after %+v", freed, before, after)
	}
}

// TestDamagedObjectFallsBack: a corrupt or missing object, or a base file
// changed since the scan, never reaches a container: the next mount drops
// the stub and the container reads its own copy.
func TestDamagedObjectFallsBack(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	trees := n.trees("a", "b")
	if _, err := c.Scan(context.Background(), trees); err != nil {
		t.Fatal(err)
	}
	toolObj := c.objectPath(sha(randBytes(1, 3<<20)))
	libObj := c.objectPath(sha(randBytes(4, 1<<20)))
	if err := os.Chmod(toolObj, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(toolObj, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage"), 4096)
	f.Close()
	if err := os.Remove(libObj); err != nil {
		t.Fatal(err)
	}
	// b's su changed while b was not mounted (it runs on a bind mount).
	su := filepath.Join(trees["b"], "root/usr/bin/su")
	if err := os.WriteFile(su, []byte("replaced su"), 0o4755); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		ct := n.container(id)
		mount(t, c.Mounter(), ct, trees[id])
		if got := sha(mustRead(t, filepath.Join(ct.Root, "usr/bin/tool"))); got != sha(randBytes(1, 3<<20)) {
			t.Fatalf("%s: corrupt object served", id)
		}
		if got := sha(mustRead(t, filepath.Join(ct.Root, "usr/lib/libx.so"))); got != sha(randBytes(4, 1<<20)) {
			t.Fatalf("%s: missing object broke the file", id)
		}
		if stubIn(trees[id], "usr/bin/tool") || stubIn(trees[id], "usr/lib/libx.so") {
			t.Fatalf("%s: stubs of damaged objects kept", id)
		}
		if !stubIn(trees[id], "usr/bin/ping") {
			t.Fatalf("%s: good stub dropped", id)
		}
	}
	if got := string(mustRead(t, filepath.Join(n.container("b").Root, "usr/bin/su"))); got != "replaced su" {
		t.Fatalf("b: stale stub served for a changed base file: %q", got)
	}
	// The next scan finds the damaged object and removes it.
	st, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	if st.Corrupt != 1 {
		t.Fatalf("scan: %+v, want one corrupt object found", st)
	}
}

// TestDisabled: globally disabled, nothing is scanned and roots are bind
// mounts; a NoDedup container never gets cache layers.
func TestDisabled(t *testing.T) {
	n := newNode(t)
	off := n.cache(func(d *spec.DedupConfig) { d.Enabled = false })
	trees := n.trees("a", "b")
	if _, err := off.Scan(context.Background(), trees); !errors.Is(err, ErrDisabled) {
		t.Fatalf("scan disabled: %v", err)
	}
	ca := n.container("a")
	mount(t, off.Mounter(), ca, trees["a"])
	if got := fstype(t, ca.Root); got != "ext4" {
		t.Fatalf("disabled: root is %s, want a bind mount of the image", got)
	}
	if err := off.Mounter().UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}

	on := n.cache(nil)
	if _, err := on.Scan(context.Background(), trees); err != nil {
		t.Fatal(err)
	}
	ca.NoDedup = true
	mount(t, on.Mounter(), ca, trees["a"])
	if got := fstype(t, ca.Root); got != "ext4" {
		t.Fatalf("NoDedup: root is %s, want a bind mount", got)
	}
	if s, _ := on.Stats(context.Background()); s.Pinned != 0 {
		t.Fatalf("NoDedup container pinned objects: %+v", s)
	}
	// An unprivileged container's root between starts is the host's
	// view, never with cache layers: the runtime builds its overlay with
	// them at start (Mounter.ShiftRoot, tested in actuators/runtime).
	cb := n.container("b")
	cb.Privileged = false
	mount(t, on.Mounter(), cb, trees["b"])
	if got := fstype(t, cb.Root); got != "ext4" {
		t.Fatalf("unprivileged: root is %s, want a bind mount", got)
	}
}

// TestChangedWhileCopied: a file whose content no longer matches the digest
// is never stored.
func TestChangedWhileCopied(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	p := filepath.Join(n.prefix, "f")
	if err := os.WriteFile(p, []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := sha([]byte("befor"))
	if err := c.commit(context.Background(), n.prefix, "f", d, 5); !errors.Is(err, errChanged) {
		t.Fatalf("commit of changed file: %v", err)
	}
	if _, err := os.Stat(c.objectPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("changed file stored")
	}
	ing, _ := os.ReadDir(filepath.Join(c.Root(), ingestDir))
	if len(ing) != 0 {
		t.Fatalf("ingest files left: %v", ing)
	}
	// The right digest commits; a second commit is an already-exists.
	d = sha([]byte("after"))
	for range 2 {
		if err := c.commit(context.Background(), n.prefix, "f", d, 5); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(c.objectPath(d), &st); err != nil || st.Mode&0o777 != 0o444 {
		t.Fatalf("object: mode %o, %v", st.Mode, err)
	}
}

// TestStoreImage: without PlainDir the store is its own ext4 image.
func TestStoreImage(t *testing.T) {
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "mkfs.ext4")
	testutil.RequireTool(t, "e2fsck")
	prefix := t.TempDir()
	cfg := Config{Paths: spec.Paths{Prefix: prefix}, Dedup: Defaults(), Log: testLog(t)}
	cfg.Dedup.CacheSize = 64 << 20
	t.Cleanup(func() { unmountUnder(t, prefix) })
	for range 2 { // the second New finds it mounted
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := fstype(t, c.Root()); got != "ext4" {
			t.Fatalf("store is %s", got)
		}
	}
	unmountUnder(t, prefix)
	// And a third finds the image and mounts it again.
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Root(), objectsDir)); err != nil {
		t.Fatal(err)
	}
}

// TestSchedule: the cron job scans and stops with its context.
func TestSchedule(t *testing.T) {
	n := newNode(t)
	c := n.cache(func(d *spec.DedupConfig) { d.Schedule = "@every 1s" })
	trees := n.trees("a", "b")
	calls := make(chan struct{}, 10)
	stop, err := c.Schedule(context.Background(), func(ctx context.Context) (map[string]string, error) {
		calls <- struct{}{}
		return trees, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls:
	case <-time.After(30 * time.Second):
		stop()
		t.Fatal("no scan within 30s")
	}
	stop()
	// The scan that ran (or runs) has finished once stop returns: its
	// objects are in the store.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := c.Stats(context.Background())
		if err == nil && s.Objects == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats after scheduled scan: %+v %v", s, err)
		}
		// The first tick may have started the scan just before stop.
		if _, err := c.Scan(context.Background(), trees); err != nil && !errors.Is(err, ErrScanRunning) {
			t.Fatal(err)
		}
	}
	bad := n.cache(func(d *spec.DedupConfig) { d.Schedule = "not a schedule" })
	if _, err := bad.Schedule(context.Background(), nil); err == nil {
		t.Fatal("bad schedule accepted")
	}
}

func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		var out []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s of %s: %w", name, path, err)
		}
		return buf[:n], nil
	}
}

// TestPlantedSymlinks: a container cannot make the scan read, store or
// stub a host file by planting symlinks in its tree.
func TestPlantedSymlinks(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "host")
	base := filepath.Join(dir, "ct", "root")
	if err := os.MkdirAll(host, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "secret"), randBytes(6, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(base, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A directory swapped for a symlink after the walk, and a link to a file.
	if err := os.Symlink(host, filepath.Join(base, "usr", "lib")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "secret"), filepath.Join(base, "usr", "secret")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"usr/lib/secret", "usr/secret", "../host/secret"} {
		if f, _, err := openRegular(base, rel); err == nil {
			f.Close()
			t.Errorf("openRegular(%s) followed a symlink out of the tree", rel)
		}
		if existsBeneath(base, rel) && rel != "usr/secret" {
			t.Errorf("existsBeneath(%s) followed a symlink", rel)
		}
	}
	c := &Cache{cfg: withDefaults(Defaults()), log: testLog(t), root: filepath.Join(dir, "store"), now: time.Now}
	var st ScanStats
	tr, err := openTree(base)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	j := &hashJob{id: "ct", rel: "usr/lib/secret", tree: tr}
	if err := c.hashJobs(context.Background(), []*hashJob{j}, &st); err != nil || j.ok || st.HashedFiles != 0 {
		t.Fatalf("hashJobs read a host file through a planted symlink: %v, %+v", err, st)
	}
	if err := c.commit(context.Background(), base, "usr/lib/secret", sha(randBytes(6, 8192)), 8192); err == nil {
		t.Fatal("commit stored a host file through a planted symlink")
	}
	if _, err := getXattr(filepath.Join(host, "secret"), xattrDigest); err == nil {
		t.Fatal("digest xattr written to a host file")
	}
}

// TestIndexLost: objects on disk that the index does not know (a crash
// after the rename, or a lost index) are verified and adopted, not copied
// again.
func TestIndexLost(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	trees := n.trees("a", "b")
	if st, err := c.Scan(context.Background(), trees); err != nil || st.Ingested != 4 {
		t.Fatalf("scan: %+v %v", st, err)
	}
	if err := os.Remove(filepath.Join(c.Root(), indexFile)); err != nil {
		t.Fatal(err)
	}
	st, err := c.Scan(context.Background(), trees)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ingested != 0 || st.Corrupt != 0 || st.MetaBuilt != 0 {
		t.Fatalf("scan after losing the index: %+v, want the objects adopted", st)
	}
	s, err := c.Stats(context.Background())
	if err != nil || s.Objects != 4 {
		t.Fatalf("stats: %+v %v", s, err)
	}
	ca := n.container("a")
	mount(t, c.Mounter(), ca, trees["a"])
	if !stubIn(trees["a"], "usr/bin/tool") {
		t.Fatal("stub dropped after the index was rebuilt")
	}
}

// TestOverlayMechanism checks the kernel feature everything stands on,
// with a stub made by hand: overlayfs serves a metacopy file's data from
// the data-only layer its absolute redirect names.
func TestOverlayMechanism(t *testing.T) {
	n := newNode(t)
	dir := filepath.Join(n.prefix, "mech")
	for _, d := range []string{"meta/usr", "base/usr", "data/ab", "delta", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := randBytes(8, 1<<20)
	if err := os.WriteFile(filepath.Join(dir, "data/ab/cdef"), data, 0o444); err != nil {
		t.Fatal(err)
	}
	// The base has different bytes under the same name: what is read must
	// come from the data layer.
	if err := os.WriteFile(filepath.Join(dir, "base/usr/f"), randBytes(9, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	stub := filepath.Join(dir, "meta/usr/f")
	if err := os.WriteFile(stub, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(stub, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(stub, xattrOvlMeta, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(stub, xattrOvlRedi, []byte("/ab/cdef"), 0); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	err := mountOverlay(root, []string{filepath.Join(dir, "meta"), filepath.Join(dir, "base")}, filepath.Join(dir, "data"),
		filepath.Join(dir, "delta"), filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, 0) })
	got := mustRead(t, filepath.Join(root, "usr/f"))
	if !bytes.Equal(got, data) {
		t.Fatal("overlay did not serve the stub's data from the data-only layer")
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "usr/f"), &st); err != nil || st.Mode&0o777 != 0o640 || st.Size != 1<<20 {
		t.Fatalf("stat through overlay: mode %o size %d %v, want the stub's", st.Mode, st.Size, err)
	}
	// A refused mount reports the kernel's reason.
	err = mountOverlay(filepath.Join(dir, "meta"), []string{filepath.Join(dir, "nonexistent")}, "", filepath.Join(dir, "delta"), filepath.Join(dir, "work"))
	if err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("mount with a missing layer: %v", err)
	}
}
