package dedup

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// aclXattr encodes a POSIX ACL (version 2) with a named user and group.
func aclXattr(uid, gid uint32) []byte {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	le(uint32(2))
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{
		{0x01, 6, 0xffffffff}, // owner
		{0x02, 6, uid},        // named user
		{0x04, 4, 0xffffffff}, // owning group
		{0x08, 4, gid},        // named group
		{0x10, 6, 0xffffffff}, // mask
		{0x20, 4, 0xffffffff}, // other
	} {
		le(e.tag)
		le(e.perm)
		le(e.id)
	}
	return b.Bytes()
}

func owner(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

func modeOf(t *testing.T, p string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mode & 0o7777
}

// TestReshift: shifting a delta moves every owner (links, whiteouts,
// nested directories, hard links once) into the new range, keeps set-id
// bits and file capabilities (a host-root v2 capability becomes the
// container root's v3 one), moves ACL entries, leaves unmapped ids alone,
// and shifting back to 0 restores the tree as it was.
func TestReshift(t *testing.T) {
	n := newNode(t)
	fsDir := n.fsDir("a")
	delta := filepath.Join(fsDir, deltaName)
	in := func(rel string) string { return filepath.Join(delta, rel) }
	for _, d := range []string{"d/sub", "../work/work"} {
		if err := os.MkdirAll(in(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, mode uint32, uid, gid int) {
		if err := os.WriteFile(in(rel), []byte(rel), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(in(rel), uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(in(rel), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("f", 0o644, 0, 0)
	write("suid", 0o6755, 0, 0)
	write("cap", 0o755, 0, 0)
	write("acl", 0o664, 1000, 1000)
	write("d/sub/nested", 0o600, 5, 6)
	write("nobody", 0o644, 70000, 70000)
	if err := os.Lchown(in("d"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(in("cap"), "security.capability", capV2(), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(in("acl"), "system.posix_acl_access", aclXattr(1000, 1001), 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{".", "d"} {
		if err := unix.Lsetxattr(in(d), "system.posix_acl_default", aclXattr(1000, 1001), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("f", in("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(in("f"), in("hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(in("wh"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	before := view(t, delta)

	check := func(s idShift) {
		t.Helper()
		sh := func(u, g uint32) string { return fmt.Sprintf("%d:%d", u+s.Uid, g+s.Gid) }
		for rel, want := range map[string]string{
			".": sh(0, 0), "f": sh(0, 0), "hard": sh(0, 0), "suid": sh(0, 0), "link": sh(0, 0), "wh": sh(0, 0),
			"acl": sh(1000, 1000), "d": sh(1000, 1000), "d/sub": sh(0, 0), "d/sub/nested": sh(5, 6),
			"nobody": "70000:70000", "../work": sh(0, 0),
		} {
			if got := owner(t, in(rel)); got != want {
				t.Errorf("shift %s: %s owned by %s, want %s", s, rel, got, want)
			}
		}
		if m := modeOf(t, in("suid")); m != 0o6755 {
			t.Errorf("shift %s: suid mode %o", s, m)
		}
		if got := readShift(delta); got != s {
			t.Errorf("recorded shift %s, want %s", got, s)
		}
		cp, err := getXattr(in("cap"), "security.capability")
		if err != nil {
			t.Fatalf("shift %s: capability lost: %v", s, err)
		}
		if s.Uid == 0 {
			if !bytes.Equal(cp, capV2()) {
				t.Errorf("capability %x, want %x", cp, capV2())
			}
		} else if len(cp) != 24 || cp[3] != 3 || binary.LittleEndian.Uint32(cp[20:]) != s.Uid || !bytes.Equal(cp[4:20], capV2()[4:20]) {
			t.Errorf("shift %s: capability %x, want v3 for root %d", s, cp, s.Uid)
		}
		for _, x := range [][2]string{{"acl", "system.posix_acl_access"}, {".", "system.posix_acl_default"}, {"d", "system.posix_acl_default"}} {
			acl, err := getXattr(in(x[0]), x[1])
			if err != nil || !bytes.Equal(acl, aclXattr(1000+s.Uid, 1001+s.Gid)) {
				t.Errorf("shift %s: %s of %s: %x, %v", s, x[1], x[0], acl, err)
			}
		}
	}
	for _, s := range []idShift{{300000, 400000}, {500000, 500000}} {
		if err := reshift(fsDir, s, false); err != nil {
			t.Fatal(err)
		}
		check(s)
	}
	if err := reshift(fsDir, idShift{}, false); err != nil {
		t.Fatal(err)
	}
	check(idShift{})
	if d := diffViews(before, view(t, delta)); len(d) > 0 {
		t.Errorf("shifted there and back, the delta changed:\n%s", d)
	}
}

// TestShiftRoot: an unprivileged container's root before its first start
// is a bind of its image; ShiftRoot makes it the overlay with the cache
// layers and lower layers idmapped onto the container's range; after a
// stop the host's view shows container ids, host root's writes there land
// in the delta as the container's; and a privileged mount of the same
// image shifts the delta back.
func TestShiftRoot(t *testing.T) {
	n := newNode(t)
	c := n.cache(nil)
	m := c.Mounter()
	trees := n.trees("a", "b")
	if _, err := c.Scan(context.Background(), trees); err != nil {
		t.Fatal(err)
	}
	ca := n.container("a")
	ca.Privileged = false
	ca.Private = filepath.Dir(trees["a"])
	fsDir := trees["a"]
	before := view(t, filepath.Join(fsDir, baseName))
	mount(t, m, ca, fsDir)
	if got := fstype(t, ca.Root); got != "ext4" {
		t.Fatalf("before start: root is %s, want a bind mount", got)
	}
	ids := idShift{300000, 300000}
	ns, err := usernsFor(idShift{}, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ok, err := m.ShiftRoot(context.Background(), ca, ids.Uid, ids.Gid, int(ns.Fd()))
	if err != nil || !ok {
		t.Fatalf("ShiftRoot: %v, %v", ok, err)
	}
	if got := fstype(t, ca.Root); got != "overlay" {
		t.Fatalf("started: root is %s, want overlay", got)
	}
	if got := owner(t, filepath.Join(ca.Root, "usr/lib/libx.so")); got != "301000:301001" {
		t.Errorf("started: usr/lib/libx.so owned by %s", got)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(ca.Root, "usr/bin/tool")), randBytes(1, 3<<20)) {
		t.Error("started: usr/bin/tool reads other bytes")
	}
	if s, _ := c.Stats(context.Background()); s.Pinned == 0 {
		t.Errorf("started: no object pinned: %+v", s)
	}
	// Host root writes into the root of a run that ended without an
	// unmount (a crash): the next start gives the file the container's ids.
	if err := os.WriteFile(filepath.Join(ca.Root, "etc/by-chroot"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.ShiftRoot(context.Background(), ca, ids.Uid, ids.Gid, int(ns.Fd())); err != nil || !ok {
		t.Fatalf("ShiftRoot again: %v, %v", ok, err)
	}
	if got := owner(t, filepath.Join(ca.Root, "etc/by-chroot")); got != "300000:300000" {
		t.Errorf("restarted: a file host root wrote is owned by %s, want the container's root", got)
	}
	if err := m.UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}

	// The host's view: the delta seen through the inverse mapping.
	mount(t, m, ca, fsDir)
	if got := fstype(t, ca.Root); got != "overlay" {
		t.Fatalf("host view: root is %s, want overlay", got)
	}
	after := view(t, ca.Root)
	if _, ok := after["etc/by-chroot"]; !ok {
		t.Error("host view: etc/by-chroot missing")
	}
	for _, v := range []map[string]string{before, after} {
		delete(v, "etc") // its mtime: a file was added
		delete(v, "etc/by-chroot")
	}
	if d := diffViews(before, after); len(d) > 0 {
		t.Errorf("host view differs from the image's tree:\n%s", d)
	}
	if err := os.WriteFile(filepath.Join(ca.Root, "etc/new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, filepath.Join(fsDir, deltaName, "etc/new")); got != "300000:300000" {
		t.Errorf("host root's write owned by %s on disk, want the container's root", got)
	}
	if err := m.UnmountRoot(context.Background(), ca); err != nil {
		t.Fatal(err)
	}

	// Privileged now: the delta is the host's ids again.
	ca.Privileged = true
	mount(t, m, ca, fsDir)
	if got := owner(t, filepath.Join(fsDir, deltaName, "etc/new")); got != "0:0" {
		t.Errorf("privileged: etc/new owned by %s on disk, want 0:0", got)
	}
	if got := readShift(filepath.Join(fsDir, deltaName)); got != (idShift{}) {
		t.Errorf("privileged: delta recorded as shifted by %s", got)
	}
	if got := owner(t, filepath.Join(ca.Root, "usr/lib/libx.so")); got != "1000:1001" {
		t.Errorf("privileged: usr/lib/libx.so owned by %s", got)
	}
}
