package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// An unprivileged container's overlay upper (FS/delta) is kept owned by the
// container's host ids (base+uid, base+gid) on disk, while its base tree,
// its stubs and the store stay owned by 0..65535 and are idmapped into the
// container's range as lower layers. The upper cannot be idmapped for the
// container: the overlay is mounted by host root, which an idmapped upper
// cannot represent (EOVERFLOW on work/work). See docs/DEDUP.md, "Idmapped
// mounts".
//
// The ids the delta is shifted by are recorded in an xattr of FS/delta;
// absent means 0 (a delta of a privileged container, or one made before
// unprivileged containers ran on overlays).
const xattrShift = "trusted.vzd.idshift"

// idRange is the size of a container's id range: ids 0..idRange-1 inside
// map onto base..base+idRange-1 on the host (the runtime's mapping).
const idRange = 65536

// idShift is the host id base of a delta's owners: uid U in the container
// is Uid+U on disk.
type idShift struct{ Uid, Gid uint32 }

func (s idShift) String() string { return fmt.Sprintf("%d:%d", s.Uid, s.Gid) }

// readShift returns the ids delta is shifted by. A missing or unreadable
// record is 0:0 (unshifted).
func readShift(delta string) idShift {
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(delta, xattrShift, buf)
	if err != nil {
		return idShift{}
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) != 2 {
		return idShift{}
	}
	u, err1 := strconv.ParseUint(f[0], 10, 32)
	g, err2 := strconv.ParseUint(f[1], 10, 32)
	if err1 != nil || err2 != nil {
		return idShift{}
	}
	return idShift{uint32(u), uint32(g)}
}

func writeShift(delta string, s idShift) error {
	if s == (idShift{}) {
		err := unix.Lremovexattr(delta, xattrShift)
		if err != nil && !errors.Is(err, unix.ENODATA) {
			return &os.PathError{Op: "removexattr", Path: delta, Err: err}
		}
		return nil
	}
	v := fmt.Sprintf("%d %d", s.Uid, s.Gid)
	if err := unix.Lsetxattr(delta, xattrShift, []byte(v), 0); err != nil {
		return &os.PathError{Op: "setxattr " + xattrShift, Path: delta, Err: err}
	}
	return nil
}

// shiftID maps one id of a delta shifted by from onto to. Ids in from's
// range move with it. Ids below idRange that are outside it were written
// by host root into a shifted view (the host's tools think in container
// ids): they are container ids and get to's base. Others (unmapped ids,
// "nobody" to the container) are left alone.
func shiftID(id, from, to uint32) uint32 {
	switch {
	case uint64(id) >= uint64(from) && uint64(id) < uint64(from)+idRange:
		return id - from + to
	case id < idRange:
		return id + to
	}
	return id
}

// reshift makes the delta of the image at fsDir owned by the ids of to:
// a walk over delta/ (small: what the container changed) that chowns
// every entry, keeping what chown drops (set-id bits, file capabilities)
// and moving the ids in POSIX ACLs and in namespaced file capabilities
// with it. It also chowns work/. The record is written last, so a walk
// cut short is walked again (it is idempotent while the two ranges do not
// overlap, which the runtime's allocation guarantees for one node). With
// repair, a delta already shifted to to is walked too, for ids host tools
// left unshifted (see shiftID).
func reshift(fsDir string, to idShift, repair bool) error {
	delta := filepath.Join(fsDir, deltaName)
	from := readShift(delta)
	if from == to && !repair {
		return nil
	}
	d, err := os.OpenFile(delta, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("shift %s: %w", delta, err)
	}
	w := &shifter{from: from, to: to, seen: map[uint64]bool{}}
	// The top directory itself, then what is below it.
	err = w.entry(int(d.Fd()), ".", delta)
	if err == nil {
		err = w.dir(d, delta)
	}
	d.Close()
	if err != nil {
		return fmt.Errorf("shift %s from %s to %s: %w", delta, from, to, err)
	}
	work := filepath.Join(fsDir, workName)
	if err := os.Lchown(work, int(to.Uid), int(to.Gid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shift %s: %w", work, err)
	}
	return writeShift(delta, to)
}

type shifter struct {
	from, to idShift
	seen     map[uint64]bool // inodes with several links already shifted
	n        int
}

// dir shifts everything below the open directory d (host path p, for
// errors). It never follows a symbolic link: entries are reached by name
// from their directory's descriptor.
func (w *shifter) dir(d *os.File, p string) error {
	for {
		ents, err := d.ReadDir(256)
		for _, e := range ents {
			name := e.Name()
			if err := w.entry(int(d.Fd()), name, filepath.Join(p, name)); err != nil {
				return err
			}
			if !e.IsDir() {
				continue
			}
			fd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: filepath.Join(p, name), Err: err}
			}
			sub := os.NewFile(uintptr(fd), filepath.Join(p, name))
			err = w.dir(sub, sub.Name())
			sub.Close()
			if err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(ents) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// entry shifts one entry of directory dfd.
func (w *shifter) entry(dfd int, name, p string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		if w.seen[st.Ino] {
			return nil
		}
		w.seen[st.Ino] = true
	}
	uid := shiftID(st.Uid, w.from.Uid, w.to.Uid)
	gid := shiftID(st.Gid, w.from.Gid, w.to.Gid)
	// The xattrs are read and written by a path through the directory's
	// descriptor, without following the entry if it is a link.
	xp := fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name)
	if name == "." {
		xp = p // the top: the host's own path to delta/, not the container's
	}
	var caps []byte
	if typ == unix.S_IFREG {
		caps = getxattr(xp, "security.capability")
	}
	if uid != st.Uid || gid != st.Gid {
		if err := unix.Fchownat(dfd, name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "chown", Path: p, Err: err}
		}
		w.n++
	}
	if typ == unix.S_IFLNK {
		return nil
	}
	// chown clears set-id bits and file capabilities: put them back.
	if typ == unix.S_IFREG && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: p, Err: err}
		}
	}
	if caps != nil {
		if err := unix.Lsetxattr(xp, "security.capability", w.shiftCaps(caps), 0); err != nil {
			return &os.PathError{Op: "set capabilities", Path: p, Err: err}
		}
	}
	for _, acl := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
		v := getxattr(xp, acl)
		if v == nil {
			continue
		}
		if nv, changed := w.shiftACL(v); changed {
			if err := unix.Lsetxattr(xp, acl, nv, 0); err != nil {
				return &os.PathError{Op: "set " + acl, Path: p, Err: err}
			}
		}
	}
	return nil
}

// getxattr returns the value of an xattr, nil when there is none.
func getxattr(p, name string) []byte {
	buf := make([]byte, 256)
	for range 4 {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*8)
			continue
		}
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	return nil
}

// shiftCaps moves the root id of a namespaced (v3) file capability, and
// makes a v2 one (root of the host: what a privileged container's files
// carry) a v3 one for the new root. The kernel writes a v3 whose root id
// is host root as v2 again.
func (w *shifter) shiftCaps(v []byte) []byte {
	const (
		magicMask = 0xff000000
		v2        = 0x02000000
		v3        = 0x03000000
		v2Size    = 20
		v3Size    = 24
	)
	if len(v) < v2Size {
		return v
	}
	magic := binary.LittleEndian.Uint32(v)
	switch {
	case magic&magicMask == v3 && len(v) >= v3Size:
		out := append([]byte(nil), v[:v3Size]...)
		root := binary.LittleEndian.Uint32(out[20:])
		binary.LittleEndian.PutUint32(out[20:], shiftID(root, w.from.Uid, w.to.Uid))
		return out
	case magic&magicMask == v2:
		out := make([]byte, v3Size)
		copy(out, v[:v2Size])
		binary.LittleEndian.PutUint32(out, magic&^magicMask|v3)
		binary.LittleEndian.PutUint32(out[20:], shiftID(0, w.from.Uid, w.to.Uid))
		return out
	}
	return v
}

// shiftACL moves the ids of the named users and groups of a POSIX ACL
// xattr (version 2: a 4-byte header, then 8-byte entries of tag, perm, id).
func (w *shifter) shiftACL(v []byte) ([]byte, bool) {
	const (
		aclUser  = 0x02
		aclGroup = 0x08
	)
	if len(v) < 4 || (len(v)-4)%8 != 0 {
		return v, false
	}
	out := append([]byte(nil), v...)
	changed := false
	for i := 4; i+8 <= len(out); i += 8 {
		tag := binary.LittleEndian.Uint16(out[i:])
		id := binary.LittleEndian.Uint32(out[i+4:])
		var nid uint32
		switch tag {
		case aclUser:
			nid = shiftID(id, w.from.Uid, w.to.Uid)
		case aclGroup:
			nid = shiftID(id, w.from.Gid, w.to.Gid)
		default:
			continue
		}
		if nid != id {
			binary.LittleEndian.PutUint32(out[i+4:], nid)
			changed = true
		}
	}
	return out, changed
}

// resetWork empties the overlay's work directory and makes it owned by s.
// Its contents are the kernel's scratch space between mounts; an overlay
// whose upper is seen through an idmapped mount cannot clean up entries
// its mapping does not cover (it mounts read-only), so every mount of that
// kind starts from an empty one.
func resetWork(work string, s idShift) error {
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("reset %s: %w", work, err)
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return fmt.Errorf("reset %s: %w", work, err)
	}
	if err := os.Lchown(work, int(s.Uid), int(s.Gid)); err != nil {
		return fmt.Errorf("reset %s: %w", work, err)
	}
	return nil
}

// usernsFor returns a user namespace (an open /proc/PID/ns/user) whose
// ids inside start at inside and map onto the host's from outside, for
// idRange ids. mount_setattr(MOUNT_ATTR_IDMAP) needs one, and only a
// process can make it: a child is started in a new user namespace with
// that mapping and stopped at its exec (ptrace), so nothing of it runs;
// it is killed once its namespace is open. The namespace lives on while
// the file is open, and an idmapped mount keeps its mapping after that.
func usernsFor(inside, outside idShift) (*os.File, error) {
	// The tracer is this thread: keep it until the child is reaped, or
	// the child would be detached and run.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Our own binary (never run: it stops at its exec), which exists even
	// when the file was replaced by an upgrade.
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"vzd-userns"}
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: int(inside.Uid), HostID: int(outside.Uid), Size: idRange}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: int(inside.Gid), HostID: int(outside.Gid), Size: idRange}},
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("make user namespace: %w", err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("make user namespace: %w", err)
	}
	return ns, nil
}

// idmappedClone returns a detached clone of the mount at path (a
// directory; the clone's root is that directory), idmapped with userns
// when it is not nil.
func idmappedClone(path string, userns int) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone mount %s: %w", path, err)
	}
	if userns >= 0 {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns)}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("idmap mount %s: %w", path, err)
		}
	}
	return fd, nil
}
