package dedup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A container writes its own tree (the base, while it runs on a bind
// mount, and its delta), so it can swap a directory for a symlink pointing
// at the host between our walk and our use of a path. Every file of a
// container is therefore opened with openat2 below its tree's root,
// refusing symlinks, magic links and mount crossings, and then used only
// through the descriptor. A FIFO planted in place of a file must not block
// us: O_NONBLOCK (harmless for regular files).
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openBeneath opens rel (relative to root) read-only without following any
// symlink in any component.
func openBeneath(root, rel string, dir bool) (*os.File, error) {
	rfd, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rfd)
	return openBeneathAt(rfd, root, rel, dir)
}

// openRoot opens the directory root as an O_PATH descriptor for
// openBeneathAt.
func openRoot(root string) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	return rfd, nil
}

// openBeneathAt is openBeneath below the open directory rfd, named root in
// errors and file names.
func openBeneathAt(rfd int, root, rel string, dir bool) (*os.File, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if dir {
		flags |= unix.O_DIRECTORY
	}
	if rel == "" || rel == "." {
		rel = "."
	}
	var fd int
	var err error
	for {
		fd, err = unix.Openat2(rfd, rel, &unix.OpenHow{Flags: uint64(flags), Resolve: resolveBeneath})
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

// openRegular opens a regular file below root and returns it with its
// stat; anything else (a directory, FIFO, device, symlink) is refused.
func openRegular(root, rel string) (*os.File, *unix.Stat_t, error) {
	rfd, err := openRoot(root)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(rfd)
	return openRegularAt(rfd, root, rel)
}

// openRegularAt is openRegular below the open directory rfd (see
// openBeneathAt).
func openRegularAt(rfd int, root, rel string) (*os.File, *unix.Stat_t, error) {
	f, err := openBeneathAt(rfd, root, rel, false)
	if err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a regular file", f.Name())
	}
	return f, &st, nil
}

// existsBeneath reports whether rel exists below root (as anything,
// whiteouts included), not following symlinks.
func existsBeneath(root, rel string) bool {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: resolveBeneath})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// fdXattrs returns the xattrs of an open file that a copy of it carries:
// all but overlayfs's (trusted.overlay.*) and ours (trusted.vzd.*).
func fdXattrs(f *os.File) (map[string][]byte, error) {
	fd := int(f.Fd())
	buf := make([]byte, 1024)
	var n int
	var err error
	for {
		n, err = unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", f.Name(), err)
	}
	out := map[string][]byte{}
	start := 0
	for i := 0; i < n; i++ {
		if buf[i] != 0 {
			continue
		}
		name := string(buf[start:i])
		start = i + 1
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "trusted.vzd.") {
			continue
		}
		v, err := fdXattr(f, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func fdXattr(f *os.File, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(int(f.Fd()), name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
