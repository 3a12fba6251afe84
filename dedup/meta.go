package dedup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"unsafe"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// Names inside a container's mounted image (FS). FS/root is the base tree;
// the rest are ours. META is a layer of the container's overlay, so nothing
// but stubs and directories may live inside it: its manifest sits beside it.
const (
	baseName     = "root"
	deltaName    = "delta"
	workName     = "work"
	metaName     = "meta"
	metaNext     = "meta.next"
	metaTmp      = "meta.tmp"
	metaOld      = "meta.old"
	manifestExt  = ".json" // meta.json describes meta, meta.next.json meta.next
	xattrDigest  = "trusted.vzd.sha1"
	xattrOvlMeta = "trusted.overlay.metacopy"
	xattrOvlRedi = "trusted.overlay.redirect"
)

// stub is one file of a container served from the cache: its path in the
// base tree, the object, and the base file's identity when the stub was
// made (a base file that changed since makes the stub stale).
type stub struct {
	Path    string `json:"path"` // relative to the base tree, slash-separated
	Digest  string `json:"digest"`
	Size    uint64 `json:"size"`
	Ino     uint64 `json:"ino"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

type manifest struct {
	Stubs []stub `json:"stubs"`
}

func readManifest(path string) (*manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &m, nil
}

func writeManifest(path string, m *manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// sameStubs reports whether two stub lists (sorted by path) are equal.
func sameStubs(a, b []stub) bool { return slices.Equal(a, b) }

// buildMeta writes a META tree for stubs into FS/meta.next with its
// manifest, to be taken into use at the container's next mount (the layers
// of a mounted overlay must not change).
func buildMeta(fsDir string, stubs []stub, lock func() (func(), error)) error {
	base := filepath.Join(fsDir, baseName)
	tmp := filepath.Join(fsDir, metaTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("clear %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	dirs := map[string]bool{".": true}
	for _, s := range stubs {
		for d := filepath.Dir(s.Path); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList) // parents before children
	for _, d := range dirList {
		if d == "." {
			continue
		}
		if err := os.Mkdir(filepath.Join(tmp, d), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Join(tmp, d), err)
		}
	}
	rfd, err := openRoot(base)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	kept := stubs[:0:0]
	for _, s := range stubs {
		err := makeStub(rfd, base, s.Path, filepath.Join(tmp, s.Path), s)
		if errors.Is(err, errChanged) {
			continue // changed since it was hashed: no stub this time
		}
		if err != nil {
			return err
		}
		kept = append(kept, s)
	}
	stubs = kept
	// Directories last, deepest first, so that creating their entries does
	// not disturb the times copied from the base tree. A META directory is
	// the visible one wherever the container has not changed it, so it
	// must look exactly like the base directory.
	for i := len(dirList) - 1; i >= 0; i-- {
		d := dirList[i]
		if err := copyDirMeta(base, d, filepath.Join(tmp, d)); err != nil {
			return err
		}
	}
	// Publish under the store's lock: a mount promoting meta.next at the
	// same moment sees the old complete tree or the new one.
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()
	next := filepath.Join(fsDir, metaNext)
	os.Remove(next + manifestExt) // first: a tree without manifest is never promoted
	if err := os.RemoveAll(next); err != nil {
		return fmt.Errorf("clear %s: %w", next, err)
	}
	if err := os.Rename(tmp, next); err != nil {
		return fmt.Errorf("rename %s: %w", next, err)
	}
	return writeManifest(next+manifestExt, &manifest{Stubs: stubs})
}

// makeStub creates the metacopy stub for the base file rel (below the open
// directory rfd, named base) at path: a sparse file of the same size, mode,
// owner, times and xattrs (file capabilities included) whose data overlayfs
// reads from the object it redirects to. A base file that is no longer the
// one hashed (inode, size, mtime, ctime) gets no stub (errChanged). The
// stub is set up through its descriptor, times last.
func makeStub(rfd int, base, rel, path string, s stub) error {
	src, st, err := openRegularAt(rfd, base, rel)
	if err != nil {
		return errChanged
	}
	defer src.Close()
	if st.Ino != s.Ino || uint64(st.Size) != s.Size || st.Mtim.Nano() != s.MtimeNs || st.Ctim.Nano() != s.CtimeNs {
		return errChanged
	}
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create stub", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(s.Size)); err != nil {
		return fmt.Errorf("size stub %s: %w", path, err)
	}
	// chown clears set-id bits and file capabilities: mode and xattrs after it.
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	xs, err := fdXattrs(src)
	if err != nil {
		return err
	}
	for n, v := range xs {
		if err := unix.Fsetxattr(fd, n, v, 0); err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", n, path, err)
		}
	}
	if err := unix.Fsetxattr(fd, xattrOvlMeta, nil, 0); err != nil {
		return fmt.Errorf("set %s on %s: %w", xattrOvlMeta, path, err)
	}
	if err := unix.Fsetxattr(fd, xattrOvlRedi, []byte(objectRel(s.Digest)), 0); err != nil {
		return fmt.Errorf("set %s on %s: %w", xattrOvlRedi, path, err)
	}
	if err := futimens(fd, st); err != nil {
		return fmt.Errorf("set times of %s: %w", path, err)
	}
	return nil
}

// futimens sets the access and modification times of fd to st's.
func futimens(fd int, st *unix.Stat_t) error {
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	// utimensat(fd, NULL, ts, 0) is futimens(3).
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// copyDirMeta gives the directory dst the metadata of the directory rel
// below base.
func copyDirMeta(base, rel, dst string) error {
	src, err := openBeneath(base, rel, true)
	if err != nil {
		return err
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", src.Name(), err)
	}
	return copyMeta(src, &st, dst)
}

// copyMeta gives dst the owner, mode, xattrs and times of the open file
// src (whose stat is st). The order matters: chown clears set-id bits and
// file capabilities, so mode and xattrs come after it, and times come last.
func copyMeta(src *os.File, st *unix.Stat_t, dst string) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	xs, err := fdXattrs(src)
	if err != nil {
		return err
	}
	for n, v := range xs {
		if err := unix.Lsetxattr(dst, n, v, 0); err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", n, dst, err)
		}
	}
	return setTimes(dst, st)
}

func setTimes(dst string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", dst, err)
	}
	return nil
}

// promoteMeta takes a META tree built by a scan into use: meta.next
// replaces meta. It runs only while the container's root is not mounted.
// A crash halfway leaves meta absent or without its manifest, which only
// means "no cache layers" until the next scan.
func promoteMeta(fsDir string) error {
	next := filepath.Join(fsDir, metaNext)
	if _, err := os.Stat(next + manifestExt); err != nil {
		// No complete next tree (none, or a scan died before its manifest).
		return nil
	}
	meta := filepath.Join(fsDir, metaName)
	old := filepath.Join(fsDir, metaOld)
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("clear %s: %w", old, err)
	}
	os.Remove(meta + manifestExt)
	if err := os.Rename(meta, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rename %s: %w", meta, err)
	}
	if err := os.Rename(next, meta); err != nil {
		return fmt.Errorf("rename %s: %w", next, err)
	}
	if err := os.Rename(next+manifestExt, meta+manifestExt); err != nil {
		return fmt.Errorf("rename %s: %w", next+manifestExt, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("clear %s: %w", old, err)
	}
	return nil
}

// validateMeta checks each stub of FS/meta before a mount and removes the
// ones that must not be used: the base file changed since the stub was
// made (its size, mtime, ctime or inode differ), or ok says its object is
// missing or corrupt. It returns the stubs kept.
func validateMeta(fsDir string, ok func(s stub) bool) ([]stub, error) {
	meta := filepath.Join(fsDir, metaName)
	m, err := readManifest(meta + manifestExt)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	base := filepath.Join(fsDir, baseName)
	kept := m.Stubs[:0:0]
	var dropped []error
	for _, s := range m.Stubs {
		good := baseMatches(base, s.Path, s) && ok(s)
		if good {
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(meta, s.Path), &st)
			good = err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
		}
		if good {
			kept = append(kept, s)
			continue
		}
		if err := os.Remove(filepath.Join(meta, s.Path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			dropped = append(dropped, fmt.Errorf("remove stale stub %s: %w", s.Path, err))
		}
	}
	if err := errors.Join(dropped...); err != nil {
		// A stub we cannot remove would still redirect: do not use META.
		return nil, err
	}
	if err := refreshDirs(meta, base); err != nil {
		return nil, err
	}
	if len(kept) != len(m.Stubs) {
		if err := writeManifest(meta+manifestExt, &manifest{Stubs: kept}); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// baseMatches reports whether the base file is still the one s was made
// from.
func baseMatches(base, rel string, s stub) bool {
	f, st, err := openRegular(base, rel)
	if err != nil {
		return false
	}
	f.Close()
	return uint64(st.Size) == s.Size && st.Ino == s.Ino && st.Mtim.Nano() == s.MtimeNs && st.Ctim.Nano() == s.CtimeNs
}

// refreshDirs makes META's directories look like the base tree's again
// (they are the visible ones) and removes those the base tree no longer
// has, which would otherwise appear in the container.
func refreshDirs(meta, base string) error {
	var dirs []string
	err := filepath.WalkDir(meta, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", meta, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first
		rel, _ := filepath.Rel(meta, dirs[i])
		src, err := openBeneath(base, rel, true)
		if err != nil {
			// Gone from the base tree (or replaced by a symlink or file).
			if err := os.RemoveAll(dirs[i]); err != nil {
				return fmt.Errorf("remove stale %s: %w", dirs[i], err)
			}
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(int(src.Fd()), &st)
		if err == nil {
			err = copyMeta(src, &st, dirs[i])
		}
		src.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
