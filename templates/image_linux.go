package templates

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// treeUsage returns the bytes the tree needs in 4 KiB blocks and its
// number of inodes.
func treeUsage(root string) (bytes, files int64, err error) {
	const blk = 4096
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		files++
		switch {
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			bytes += (fi.Size() + blk - 1) / blk * blk
		case d.IsDir():
			bytes += blk
		case d.Type()&fs.ModeSymlink != 0:
			// Targets of 60 bytes or more need a block of their own.
			if t, err := os.Readlink(p); err == nil && len(t) >= 60 {
				bytes += blk
			}
		}
		return nil
	})
	return bytes, files, err
}

// imageSize sizes a cache image tightly: the tree, room for its inodes at
// the default ratio of 16 KiB per inode (kept when a container grows the
// image, so a grown image has the usual inode density), the journal and a
// margin. mkfs.ext4 -d reports when it is too small and the caller retries.
func imageSize(treeBytes, files int64) int64 {
	const mib = 1 << 20
	data := treeBytes + treeBytes/10 + 8*mib
	inodes := files*16384 + files*16384/4
	size := max(data, inodes)
	// mke2fs's default journal for a file system of this size.
	switch {
	case size < 128*mib:
		size += 4 * mib
	case size < 1024*mib:
		size += 16 * mib
	default:
		size += 64 * mib
	}
	// inode tables (256 bytes per 16 KiB) and group metadata.
	size += size/64 + 2*mib
	return (size + mib - 1) / mib * mib
}

// makeImage writes an ext4 image of staging (whose top level is root/) to
// dst: first to dst.tmp, fsynced, then renamed.
func makeImage(ctx context.Context, staging, dst string, treeBytes, files int64, progress Progress) error {
	tmp := dst + ".tmp"
	size := imageSize(treeBytes, files)
	for attempt := 0; ; attempt++ {
		os.Remove(tmp)
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return fmt.Errorf("size %s: %w", tmp, err)
		}
		f.Close()
		// The total is unknown: mke2fs also writes the journal and metadata.
		progress.Start("mkfs.ext4", 0)
		stop := pollProgress(progress, func() int64 { return allocated(tmp) })
		// -b/-I/-i: the "small" profile mke2fs picks for small file systems
		// (1 KiB blocks, 4 KiB per inode) would stay with the image when a
		// container grows it. -m 0: a container's root cannot use blocks
		// reserved for the host's root anyway. lazy_journal_init: the
		// journal of a fresh sparse file reads as zeros without being
		// written, so it stays a hole that copies of the image skip.
		cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256",
			"-i", "16384", "-m", "0", "-E", "root_owner=0:0,lazy_journal_init=1", "-L", "vzd-template",
			"-d", staging, tmp)
		out, err := cmd.CombinedOutput()
		stop()
		if err == nil {
			progress.Done()
			break
		}
		if ctx.Err() != nil {
			os.Remove(tmp)
			return ctx.Err()
		}
		if attempt < 3 && isNoSpace(out) {
			size += size / 2
			continue
		}
		os.Remove(tmp)
		return fmt.Errorf("mkfs.ext4 -d %s %s: %w: %s", staging, tmp, err, tail(out))
	}
	if err := fsyncPath(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(dst))
	recache(dst)
	return nil
}

// recache drops the page cache of the image at path (written in small
// pieces, so cached in small folios) and reads its data back in large
// reads, which readahead caches in large folios. Containers copy the image
// with O_DIRECT from its page cache, and pinning large folios is more than
// twice as fast (a debian template: 25 ms against 60-75). It only costs a
// build a read of the image; errors are ignored (the cache is a cache).
func recache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	if unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED) != nil {
		return
	}
	st, err := f.Stat()
	if err != nil {
		return
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			return // ENXIO: only a hole is left
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return
		}
		for p := data; p < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-p)], p)
			if n == 0 || (err != nil && err != io.EOF) {
				return
			}
			p += int64(n)
		}
		off = hole
	}
}

// makePresized writes a copy of the image img grown to size bytes at dst:
// a sparse copy under dst.tmp, resize2fs, fsync, rename. It is what the
// images actuator would make of img for a container of that size, made
// once here so that containers of the default size copy it and skip
// their own resize2fs. img was made by mkfs.ext4 and never mounted, so
// resize2fs takes it without an e2fsck -f.
func makePresized(ctx context.Context, img, dst string, size int64, progress Progress) (retErr error) {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	defer func() {
		if retErr != nil {
			os.Remove(tmp)
		}
	}()
	progress.Start("presize", 0)
	if err := copySparse(img, tmp); err != nil {
		return err
	}
	if err := os.Truncate(tmp, size); err != nil {
		return fmt.Errorf("size %s: %w", tmp, err)
	}
	out, err := exec.CommandContext(ctx, "resize2fs", tmp, strconv.FormatInt(size/1024, 10)+"K").CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("resize2fs %s: %w: %s", tmp, err, tail(out))
	}
	if err := fsyncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	recache(dst)
	progress.Done()
	return nil
}

// copySparse copies src to dst (created), skipping the holes of src.
func copySparse(src, dst string) (retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err := out.Close(); retErr == nil {
			retErr = err
		}
	}()
	inFd := int(in.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return fmt.Errorf("copy %s: SEEK_DATA: %w", src, err)
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("copy %s: SEEK_HOLE: %w", src, err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return fmt.Errorf("copy %s to %s: %w", src, dst, err)
		}
		off = hole
	}
	return out.Truncate(fi.Size())
}

func isNoSpace(out []byte) bool {
	s := strings.ToLower(string(out))
	return strings.Contains(s, "no space") || strings.Contains(s, "could not allocate") ||
		strings.Contains(s, "not enough") || strings.Contains(s, "no free space") ||
		strings.Contains(s, "inodes")
}

func allocated(path string) int64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

func fsyncPath(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return f.Close()
}

// writeTarball writes the tree as a gzip-compressed tar with numeric
// owners, hard links, device nodes and xattrs (security.capability
// included), in the form GNU tar --xattrs extracts.
func writeTarball(ctx context.Context, root, dst string, treeBytes int64, progress Progress) (retErr error) {
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		if retErr != nil {
			os.Remove(tmp)
		}
	}()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	progress.Start("tarball", treeBytes)
	var done int64
	links := map[[2]uint64]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("tar header %s: %w", p, err)
		}
		hdr.Name = "./" + rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = hdr.Name
			}
		}
		if x, err := xattrs(p); err != nil {
			return err
		} else if len(x) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range x {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar %s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, in)
			in.Close()
			if err != nil {
				return fmt.Errorf("tar %s: %w", p, err)
			}
			done += n
			progress.Update(done)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	recache(dst)
	progress.Done()
	return nil
}

// xattrs returns the extended attributes of p (not following symlinks).
func xattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range bytes.Split(buf[:sz], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		n := string(name)
		vs, err := unix.Lgetxattr(p, n, nil)
		if err != nil {
			continue
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, n, v)
		if err != nil {
			continue
		}
		out[n] = string(v[:vs])
	}
	return out, nil
}
