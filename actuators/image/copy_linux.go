package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// CopySparse copies the file src to dst (which must not exist), keeping
// holes. It tries, in order: FICLONE (a reflink, on btrfs and xfs), then
// the data extents found with SEEK_DATA/SEEK_HOLE, each copied in the
// kernel with copy_file_range (falling back to read/write). Copying whole
// with copy_file_range is not used: on ext4 it writes holes out as zeros.
// It returns the method used ("clone", "copy_file_range", "read/write").
func CopySparse(dst, src string) (method string, retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		if err := out.Close(); retErr == nil && err != nil {
			retErr = err
		}
		if retErr != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return "clone", nil
	}
	size := fi.Size()
	method = "copy_file_range"
	inFd, outFd := int(in.Fd()), int(out.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return "", fmt.Errorf("copy %s: SEEK_DATA: %w", src, err)
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			return "", fmt.Errorf("copy %s: SEEK_HOLE: %w", src, err)
		}
		for pos := data; pos < hole; {
			n, err := 0, error(nil)
			if method == "copy_file_range" {
				ro, wo := pos, pos
				n, err = unix.CopyFileRange(inFd, &ro, outFd, &wo, int(min(hole-pos, 1<<30)), 0)
				if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) ||
					errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
					method = "read/write"
					continue
				}
			} else {
				var m int64
				m, err = io.Copy(io.NewOffsetWriter(out, pos), io.NewSectionReader(in, pos, hole-pos))
				n = int(m)
			}
			if err != nil {
				return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
			}
			if n == 0 {
				return "", fmt.Errorf("copy %s to %s: %w", src, dst, io.ErrUnexpectedEOF)
			}
			pos += int64(n)
		}
		off = hole
	}
	if err := out.Truncate(size); err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return method, nil
}
