// Package safefile reads and writes files inside a container's root file
// system without following links the container planted: every path is
// resolved by the kernel with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS),
// so an absolute symlink or ".." inside the tree stays inside the root, and
// a file is replaced by renameat within its directory, so a link at the
// last component is replaced, never written through.
//
// Names are paths as the container sees them ("/etc/resolv.conf"); root is
// the host path of the container's root, which the caller trusts.
package safefile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is returned (wrapped in an *fs.PathError) by ReadFile when
// the name is a symlink, a directory, a FIFO or anything but a regular file.
var ErrNotRegular = errors.New("not a regular file")

const resolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// Root is an open container root. It pins the directory, so a rename of
// the host path after Open does not redirect later calls.
type Root struct {
	fd   int
	path string
}

// Open opens the container root at the host path dir.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return &Root{fd: fd, path: dir}, nil
}

// Close releases the root.
func (r *Root) Close() error { return unix.Close(r.fd) }

func (r *Root) hostPath(name string) string { return filepath.Join(r.path, name) }

// openat2 resolves name inside the root, retrying EAGAIN, which the kernel
// returns when a concurrent rename could have let a ".." escape.
func (r *Root) openat2(name string, flags uint64, mode uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Mode: mode, Resolve: resolve}
	var err error
	for range 16 {
		var fd int
		fd, err = unix.Openat2(r.fd, name, &how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return -1, err
}

// OpenFile opens name inside the root with the open(2) flags and mode; a
// symlink on the way is resolved as if the root were "/".
func (r *Root) OpenFile(name string, flags int, perm fs.FileMode) (*os.File, error) {
	fd, err := r.openat2(rel(name), uint64(flags), uint64(perm.Perm()))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: r.hostPath(name), Err: err}
	}
	return os.NewFile(uintptr(fd), r.hostPath(name)), nil
}

// rel turns a container path into one relative to the root; openat2 with
// RESOLVE_IN_ROOT would treat a leading "/" as the root anyway, this keeps
// the intent plain.
func rel(name string) string {
	p := path.Clean("/" + name)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// openParent opens the directory that holds name and returns it with the
// last component.
func (r *Root) openParent(name string) (*os.File, string, error) {
	p := path.Clean("/" + name)
	dir, base := path.Split(p)
	if base == "" || base == "." || base == ".." {
		return nil, "", &fs.PathError{Op: "open", Path: r.hostPath(name), Err: unix.EINVAL}
	}
	d, err := r.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, "", err
	}
	return d, base, nil
}

// ReadFile reads the regular file name. It does not follow a symlink at the
// last component and does not block on a FIFO: either is ErrNotRegular.
func (r *Root) ReadFile(name string) ([]byte, error) {
	d, base, err := r.openParent(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	fd, err := unix.Openat(int(d.Fd()), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = ErrNotRegular
		}
		return nil, &fs.PathError{Op: "open", Path: r.hostPath(name), Err: err}
	}
	f := os.NewFile(uintptr(fd), r.hostPath(name))
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: r.hostPath(name), Err: ErrNotRegular}
	}
	return io.ReadAll(f)
}

// WriteFile replaces name with a regular file holding data: it writes a
// temporary file in the same directory, syncs it and renames it over name,
// so readers see the old or the new content and a symlink at name is
// replaced, not followed. The new file keeps the owner of the regular file
// it replaces, or takes the owner of its directory (so that in a container
// with a user namespace it belongs to the container's root, not the
// host's). The directory must exist.
func (r *Root) WriteFile(name string, data []byte, perm fs.FileMode) (retErr error) {
	d, base, err := r.openParent(name)
	if err != nil {
		return err
	}
	defer d.Close()
	dfd := int(d.Fd())

	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		if err := unix.Fstat(dfd, &st); err != nil {
			return &fs.PathError{Op: "stat", Path: r.hostPath(path.Dir(name)), Err: err}
		}
	}

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + base + ".vzd-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &fs.PathError{Op: "create", Path: r.hostPath(path.Join(path.Dir(name), tmp)), Err: err}
	}
	f := os.NewFile(uintptr(fd), r.hostPath(path.Join(path.Dir(name), tmp)))
	defer func() {
		if f != nil {
			f.Close()
		}
		if retErr != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return &fs.PathError{Op: "chown", Path: f.Name(), Err: err}
	}
	if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
		return &fs.PathError{Op: "chmod", Path: f.Name(), Err: err}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		f = nil
		return err
	}
	f = nil
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return &fs.PathError{Op: "rename", Path: r.hostPath(name), Err: err}
	}
	// A failed directory sync loses nothing already visible; report it
	// anyway so the caller retries.
	if err := unix.Fsync(dfd); err != nil {
		return &fs.PathError{Op: "sync", Path: r.hostPath(path.Dir(name)), Err: err}
	}
	return nil
}

// UpdateFile writes data to name only when its content differs (or it is
// not a regular file) and reports whether it wrote.
func (r *Root) UpdateFile(name string, data []byte, perm fs.FileMode) (bool, error) {
	old, err := r.ReadFile(name)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := r.WriteFile(name, data, perm); err != nil {
		return false, err
	}
	return true, nil
}

// WriteFile opens root, writes name and closes root.
func WriteFile(root, name string, data []byte, perm fs.FileMode) error {
	r, err := Open(root)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.WriteFile(name, data, perm)
}

// ReadFile opens root, reads name and closes root.
func ReadFile(root, name string) ([]byte, error) {
	r, err := Open(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.ReadFile(name)
}
