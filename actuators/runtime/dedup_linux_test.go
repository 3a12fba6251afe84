package runtime

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/dedup"
	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// dedupNode is a scratch node for the dedup tests: an ext4 image (a real
// block file system, so page-cache residency means something) mounted at
// PREFIX/vz, holding the containers' private areas (their "images" are
// plain directories PRIVATE/mnt) and the store as a plain directory.
type dedupNode struct {
	*env
	cache *dedup.Cache
	m     *dedup.Mounter
}

func newDedupNode(t *testing.T) *dedupNode { return newDedupNodeSized(t, "256M", nil) }

func newDedupNodeSized(t *testing.T, size string, mod func(*spec.DedupConfig)) *dedupNode {
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "mkfs.ext4")
	e := newEnv(t)
	vz := filepath.Join(e.prefix, "vz")
	img := filepath.Join(e.prefix, "node.img")
	if err := os.MkdirAll(vz, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	// mount -o loop sets autoclear: the device goes with the unmount.
	if out, err := exec.Command("mount", "-o", "loop", img, vz).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() { unmountBelow(t, vz) })
	d := dedup.Defaults()
	d.Dirs = []string{"bin", "usr"}
	if mod != nil {
		mod(&d)
	}
	cache, err := dedup.New(dedup.Config{Paths: spec.Paths{Prefix: e.prefix}, Dedup: d, Log: testLogger(t), PlainDir: true})
	if err != nil {
		t.Fatal(err)
	}
	n := &dedupNode{env: e, cache: cache, m: cache.Mounter()}
	// The runtime of the env, now with the dedup root builder.
	n.r.roots = n.m
	return n
}

// unmountBelow unmounts everything at or below dir, deepest first.
func unmountBelow(t *testing.T, dir string) {
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

// sharedData is a file every container of the test template has (1 MiB,
// the same bytes), in a scanned directory.
const sharedData = "usr/lib/shared.bin"

// template writes the test template into dir: busybox plus files with
// various owners and modes.
func template(t *testing.T, dir string) {
	testutil.BusyboxRoot(t, dir)
	r := rand.New(rand.NewPCG(7, 7))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	files := []struct {
		path     string
		data     []byte
		mode     uint32
		uid, gid int
	}{
		{sharedData, data, 0o644, 0, 0},
		{"usr/lib/private.so", data[:300<<10], 0o640, 1000, 1001},
		{"usr/bin/setuid", data[:64<<10], 0o4755, 0, 0},
		{"usr/share/owned", []byte("owned\n"), 0o600, 33, 33},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
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
}

// container makes an unprivileged busybox container whose image is the
// plain directory PRIVATE/mnt (root/ holding the template), its root
// mounted by the dedup mounter as the images actuator would.
func (n *dedupNode) container(noDedup bool) *spec.Container {
	t := n.t
	id := testutil.UniqueName("ct")
	c := &spec.Container{
		ID:          id,
		Hostname:    "host-" + id,
		State:       spec.StateRunning,
		StopTimeout: 20 * time.Second,
		Init:        []string{spec.DefaultInit},
		Root:        filepath.Join(n.prefix, "vz/root", id),
		Private:     filepath.Join(n.prefix, "vz/private", id),
		NoDedup:     noDedup,
	}
	template(t, filepath.Join(c.Private, "mnt/root"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.r.Stop(ctx, c); err != nil {
			t.Errorf("stop %s: %v", id, err)
		}
		if err := n.cg.Remove(ctx, id); err != nil {
			t.Errorf("remove cgroup %s: %v", id, err)
		}
		if err := n.m.UnmountRoot(ctx, c); err != nil {
			t.Errorf("unmount root of %s: %v", id, err)
		}
	})
	return c
}

func (n *dedupNode) mountRoot(c *spec.Container) {
	n.t.Helper()
	if err := n.m.MountRoot(context.Background(), c, filepath.Join(c.Private, "mnt")); err != nil {
		n.t.Fatalf("mount root of %s: %v", c.ID, err)
	}
}

// listing is what a container sees of its /bin, /usr and /etc: per path
// type, owner, mode, and for files size and content digest, as its own
// tools say. (A directory's size is the file system's business: an
// overlay reports another one.)
const listing = `cd / && find bin usr etc | sort | while read -r p; do
  s=$(stat -c '%F %u:%g %a' "$p")
  case "$s" in "regular"*) s="$s $(stat -c %s "$p") $(md5sum < "$p" | cut -d' ' -f1)";; esac
  echo "$p $s"
done`

func diffLines(a, b string) []string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var d []string
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			d = append(d, x+" | "+y)
		}
		if len(d) > 10 {
			break
		}
	}
	return d
}

func fileSHA1(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha1.Sum(b)
	return hex.EncodeToString(s[:])
}

func ownerOf(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// TestDedupUnprivileged: unprivileged containers from one template, started
// on dedup roots, see the same tree as a container without the cache
// (content, owners as seen inside, modes), read the shared file from the
// store's one object (the page cache holds the object, not their own
// copies), write into their own delta owned by their host ids, and do not
// see each other's writes. After a stop and a remount the host's view of
// the image shows the container's ids; a restart sees the same tree.
func TestDedupUnprivileged(t *testing.T) {
	n := newDedupNode(t)
	ctx := context.Background()
	c1, c2 := n.container(false), n.container(false)
	plain := n.container(true)
	trees := map[string]string{}
	for _, c := range []*spec.Container{c1, c2} {
		trees[c.ID] = filepath.Join(c.Private, "mnt")
	}
	st, err := n.cache.Scan(ctx, trees)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scan: %+v", st)
	for _, c := range []*spec.Container{c1, c2, plain} {
		n.mountRoot(c)
	}
	// Not yet run: no delta, so the host's view is a bind of root/.
	if !mounted(t, c1.Root, "ext4") {
		t.Fatalf("root of %s before start is not a bind of the image", c1.ID)
	}
	sum := fileSHA1(t, filepath.Join(c1.Private, "mnt/root", sharedData))
	object := filepath.Join(n.cache.Root(), "objects", sum[:2], sum[2:])
	if _, err := os.Stat(object); err != nil {
		t.Fatalf("shared file not stored: %v", err)
	}
	for _, p := range []string{object, filepath.Join(c1.Private, "mnt/root", sharedData), filepath.Join(c2.Private, "mnt/root", sharedData)} {
		testutil.DropPages(t, p)
	}

	st1, st2 := n.start(c1), n.start(c2)
	stp := n.start(plain)
	if st1.UIDBase == st2.UIDBase || st1.UIDBase == 0 {
		t.Fatalf("id bases %d and %d", st1.UIDBase, st2.UIDBase)
	}
	for _, c := range []*spec.Container{c1, c2} {
		if !mounted(t, c.Root, "overlay") {
			t.Fatalf("root of %s is not an overlay after start", c.ID)
		}
		mi := n.mustSh(c, "cat /proc/self/mountinfo")
		if !strings.Contains(mi, "datadir+="+filepath.Join(n.cache.Root(), "objects")) {
			t.Errorf("%s: root has no store layer:\n%s", c.ID, mi)
		}
	}
	if !mounted(t, plain.Root, "ext4") {
		t.Errorf("root of the container without dedup is not a bind of its image")
	}

	// The same tree as without the cache, as the containers see it.
	want := n.mustSh(plain, listing)
	for _, c := range []*spec.Container{c1, c2} {
		if got := n.mustSh(c, listing); got != want {
			t.Errorf("%s sees another tree than the container without cache:\n%s", c.ID, strings.Join(diffLines(got, want), "\n"))
		}
	}
	if !strings.Contains(want, "usr/share/owned regular file 33:33 600 6 ") || !strings.Contains(want, "usr/bin/setuid regular file 0:0 4755") {
		t.Errorf("listing does not show the template's owners and modes:\n%s", want)
	}
	if id := n.mustSh(c1, "id -u; stat -c %u:%g /bin/busybox"); id != "0\n0:0" {
		t.Errorf("inside: %q, want root and files owned by root", id)
	}

	// Reads of the shared file in both containers come from the object:
	// it is in the page cache, their own copies are not.
	testutil.DropPages(t, object)
	for _, c := range []*spec.Container{c1, c2} {
		n.mustSh(c, "cat /"+sharedData+" > /dev/null")
		if in, _ := testutil.Resident(t, filepath.Join(c.Private, "mnt/root", sharedData)); in != 0 {
			t.Errorf("%s: its own copy has %d pages in the page cache, want 0", c.ID, in)
		}
	}
	if in, total := testutil.Resident(t, object); in != total {
		t.Errorf("object: %d of %d pages in the page cache, want all", in, total)
	}

	// Writes: owned by the container's root inside, by its host base in
	// its delta; the other container and the object are untouched.
	n.mustSh(c1, "echo new > /root/new && mkdir /root/dir && chown 1000:1000 /root/dir && echo changed >> /"+sharedData)
	if got := n.mustSh(c1, "stat -c %u:%g /root/new /root/dir"); got != "0:0\n1000:1000" {
		t.Errorf("inside: owners %q", got)
	}
	delta := filepath.Join(c1.Private, "mnt/delta")
	if got, want := ownerOf(t, filepath.Join(delta, "root/new")), fmt.Sprintf("%d:%d", st1.UIDBase, st1.GIDBase); got != want {
		t.Errorf("delta/root/new owned by %s on disk, want %s", got, want)
	}
	if got, want := ownerOf(t, filepath.Join(delta, "root/dir")), fmt.Sprintf("%d:%d", st1.UIDBase+1000, st1.GIDBase+1000); got != want {
		t.Errorf("delta/root/dir owned by %s on disk, want %s", got, want)
	}
	if got := n.mustSh(c2, "md5sum < /"+sharedData+"; ls /root"); got != n.mustSh(plain, "md5sum < /"+sharedData+"; ls /root") {
		t.Errorf("%s sees %s's writes: %q", c2.ID, c1.ID, got)
	}
	if got := fileSHA1(t, object); got != sum {
		t.Errorf("object changed: %s", got)
	}
	_ = stp

	// Stop, unmount, mount again: the host's view shows container ids.
	if err := n.r.Stop(ctx, c1); err != nil {
		t.Fatal(err)
	}
	if err := n.m.UnmountRoot(ctx, c1); err != nil {
		t.Fatal(err)
	}
	n.mountRoot(c1)
	if got := ownerOf(t, filepath.Join(c1.Root, "root/new")); got != "0:0" {
		t.Errorf("host view: root/new owned by %s, want 0:0", got)
	}
	if got := ownerOf(t, filepath.Join(c1.Root, "usr/share/owned")); got != "33:33" {
		t.Errorf("host view: usr/share/owned owned by %s, want 33:33", got)
	}
	// What host root writes there belongs to the container.
	if err := os.WriteFile(filepath.Join(c1.Root, "root/from-host"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := ownerOf(t, filepath.Join(delta, "root/from-host")), fmt.Sprintf("%d:%d", st1.UIDBase, st1.GIDBase); got != want {
		t.Errorf("delta/root/from-host owned by %s on disk, want %s", got, want)
	}
	n.start(c1)
	if got := n.mustSh(c1, "stat -c %u:%g /root/new /root/dir /root/from-host; cat /root/new"); got != "0:0\n1000:1000\n0:0\nnew" {
		t.Errorf("after restart: %q", got)
	}
}

// mounted reports whether the top mount at dir has file system type fs.
func mounted(t *testing.T, dir, fs string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0 && ms[len(ms)-1].FSType == fs
}

// TestDebianOnDedupUnprivileged boots a stock Debian 12 (systemd)
// unprivileged on a dedup root (its /usr served from the store) and stops
// it; then again from the host's view after an unmount and mount.
func TestDebianOnDedupUnprivileged(t *testing.T) {
	if os.Getenv("VZD_TEST_DEBIAN") != "1" {
		t.Skip("set VZD_TEST_DEBIAN=1 to boot Debian (builds the template with debootstrap when not cached)")
	}
	testutil.RequireTool(t, "debootstrap")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	in, err := templates.NewCache(spec.Paths{Prefix: debianCache}, nil).Build(ctx, "debian-12-x86_64", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One container: store what it has.
	n := newDedupNodeSized(t, "2G", func(d *spec.DedupConfig) {
		d.MinContainers = 1
		d.Dirs = []string{"usr/bin", "usr/lib/x86_64-linux-gnu"}
	})
	id := testutil.UniqueName("ct")
	c := &spec.Container{
		ID: id, Hostname: "host-" + id, State: spec.StateRunning, StopTimeout: 60 * time.Second,
		Init: []string{spec.DefaultInit}, Root: filepath.Join(n.prefix, "vz/root", id),
		Private: filepath.Join(n.prefix, "vz/private", id),
	}
	img := filepath.Join(c.Private, "root.img")
	fsDir := filepath.Join(c.Private, "mnt")
	if err := os.MkdirAll(fsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", in.Path, img).CombinedOutput(); err != nil {
		t.Fatalf("copy template: %v: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", img, fsDir).CombinedOutput(); err != nil {
		t.Fatalf("mount image: %v: %s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := n.r.Stop(ctx, c); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := n.cg.Remove(ctx, id); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
		if err := n.m.UnmountRoot(ctx, c); err != nil {
			t.Errorf("unmount root: %v", err)
		}
		if err := unix.Unmount(fsDir, 0); err != nil {
			t.Errorf("unmount image: %v", err)
		}
	})
	st, err := n.cache.Scan(ctx, map[string]string{id: fsDir})
	if err != nil || st.Stubs == 0 {
		t.Fatalf("scan: %+v, %v", st, err)
	}
	t.Logf("scan: %d files stored, %d MiB", st.Ingested, st.IngestedBytes>>20)
	boot := func() {
		t.Helper()
		n.mountRoot(c)
		n.start(c)
		state, failed := n.waitSystemd(c)
		t.Logf("Debian booted on dedup: %s; failed units: %q", state, failed)
		if mi := n.mustSh(c, "cat /proc/self/mountinfo"); !strings.Contains(mi, "datadir+=") {
			t.Errorf("root has no store layer:\n%s", mi)
		}
		if got := n.mustSh(c, "stat -c %u:%g /usr/bin/ls /etc/machine-id; id -u"); got != "0:0\n0:0\n0" {
			t.Errorf("owners inside: %q", got)
		}
		if err := n.r.Stop(ctx, c); err != nil {
			t.Fatal(err)
		}
		rst, err := n.r.Status(ctx, c)
		if err != nil || rst.Running || rst.ExitCode == 128+9 {
			b, _ := os.ReadFile(ConsoleLogPath(c))
			t.Fatalf("after stop: %+v, %v; console:\n%s", rst, err, b)
		}
		if err := n.m.UnmountRoot(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	boot()
	boot() // from the host's view of the delta the first boot wrote
}
