package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Tuning of the direct copy, measured on an ext4 host over virtio (a
// 118 MiB Debian template): four writes of 8 MiB in flight keep the
// device busy; one at a time is 10-15% slower, 1 MiB pieces slower still.
const (
	directPiece   = 8 << 20
	directWorkers = 4
	// directAlign is the offset, length and memory alignment O_DIRECT
	// gets: a page, which every logical block size divides.
	directAlign = 4096
	// bufferedPiece is how much the buffered copy copies before it
	// starts that part's writeback.
	bufferedPiece = 8 << 20
)

// CopySparse copies the file src to dst (which must not exist), keeping
// holes, and returns how:
//
//   - "clone": FICLONE, a reflink (btrfs, xfs): nothing is copied.
//   - "direct": each data extent of src (found with SEEK_DATA/SEEK_HOLE)
//     is written to dst with O_DIRECT, straight from src's page cache
//     (src mapped, never touched by this process), several writes in
//     flight. No memory copy, and dst's pages do not fill the page cache:
//     the loop device reads the image with direct I/O anyway.
//   - "copy_file_range" or "read/write": buffered, where dst's file system
//     refuses O_DIRECT; each piece's writeback is started as soon as it is
//     copied (sync_file_range), so that it overlaps the rest of the copy.
//
// Copying whole with copy_file_range is not used: on ext4 it writes holes
// out as zeros. The copy is not durable when CopySparse returns: the
// caller fsyncs dst (after the direct copy that only waits for the file's
// metadata and the device's cache flush; the data is on the device).
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
	spans, err := dataSpans(in, size)
	if err != nil {
		return "", err
	}
	// The final size first: O_DIRECT writes inside the file's size run in
	// parallel, extending ones are serialised by ext4.
	if err := out.Truncate(size); err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	done, err := copyDirect(dst, in, spans, size)
	if err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if done {
		return "direct", nil
	}
	method, err = copyBuffered(out, in, spans)
	if err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return method, nil
}

// span is a byte range [off, end) of a file.
type span struct{ off, end int64 }

// dataSpans returns the data extents of f (size bytes), in order.
func dataSpans(f *os.File, size int64) ([]span, error) {
	fd := int(f.Fd())
	var spans []span
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return nil, fmt.Errorf("%s: SEEK_DATA: %w", f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("%s: SEEK_HOLE: %w", f.Name(), err)
		}
		spans = append(spans, span{data, min(hole, size)})
		off = hole
	}
	return spans, nil
}

// directSpans aligns spans for O_DIRECT: each grows outwards to whole
// pages (what it gains of a hole is written as the zeros it reads as) and
// is cut in pieces of at most directPiece. ok is false when a span cannot
// be aligned: the file's size is not a whole number of pages.
func directSpans(spans []span, size int64) (pieces []span, ok bool) {
	for _, s := range spans {
		off := s.off / directAlign * directAlign
		end := min((s.end+directAlign-1)/directAlign*directAlign, size)
		if end%directAlign != 0 {
			return nil, false
		}
		if n := len(pieces); n > 0 && pieces[n-1].end > off {
			off = pieces[n-1].end // rounding made two spans touch
		}
		for ; off < end; off += directPiece {
			pieces = append(pieces, span{off, min(off+directPiece, end)})
		}
	}
	return pieces, true
}

// copyDirect writes spans of in to the file dst with O_DIRECT from a
// shared read-only mapping of in. done is false, with nothing to report,
// when dst's file system (or the spans' alignment) does not allow it; the
// caller then copies buffered over whatever was written.
func copyDirect(dst string, in *os.File, spans []span, size int64) (done bool, err error) {
	pieces, ok := directSpans(spans, size)
	if !ok {
		return false, nil
	}
	if len(pieces) == 0 {
		return true, nil
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return false, nil // no O_DIRECT here (tmpfs before 6.6, some FUSE)
	}
	if err != nil {
		return false, err
	}
	defer out.Close()
	// The kernel reads the mapping (pinning src's cached pages for the
	// device); this process never touches it, so a src truncated meanwhile
	// fails the write with EFAULT rather than raising SIGBUS.
	m, err := unix.Mmap(int(in.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return false, nil
	}
	defer unix.Munmap(m)
	// What is not cached yet (a template after a reboot) is read by the
	// writes' page faults; MADV_HUGEPAGE makes those read 2 MiB folios
	// (file systems with large folios, THP not "never"). Pinning a few
	// large folios instead of 4 KiB pages halves the copy: a debian
	// template copied in 25 ms, not 60-75 (MADV_WILLNEED and MADV_SEQUENTIAL
	// read small ones, so neither is used). Advisory: errors are ignored.
	unix.Madvise(m, unix.MADV_HUGEPAGE)

	work := make(chan span)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	fd := int(out.Fd())
	for range min(directWorkers, len(pieces)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				for off := p.off; off < p.end && !failed(); {
					n, err := unix.Pwrite(fd, m[off:p.end], off)
					if errors.Is(err, unix.EINTR) {
						continue
					}
					if err == nil && n == 0 {
						err = io.ErrShortWrite
					}
					if err != nil {
						fail(err)
						break
					}
					off += int64(n)
				}
			}
		}()
	}
	for _, p := range pieces {
		if failed() {
			break
		}
		work <- p
	}
	close(work)
	wg.Wait()
	if errors.Is(firstErr, unix.EINVAL) {
		return false, nil // alignment this device or file system refuses
	}
	if firstErr != nil {
		return false, firstErr
	}
	return true, nil
}

// copyBuffered copies spans of in to out through the page cache: with
// copy_file_range in the kernel, or read/write where that is refused.
// After each piece it starts the piece's writeback (sync_file_range
// without waiting), so the caller's fsync finds little left to write.
func copyBuffered(out, in *os.File, spans []span) (method string, err error) {
	method = "copy_file_range"
	inFd, outFd := int(in.Fd()), int(out.Fd())
	for _, s := range spans {
		for pos := s.off; pos < s.end; {
			var n int
			want := min(s.end-pos, bufferedPiece)
			if method == "copy_file_range" {
				ro, wo := pos, pos
				n, err = unix.CopyFileRange(inFd, &ro, outFd, &wo, int(want), 0)
				if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) ||
					errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
					method = "read/write"
					continue
				}
			} else {
				var m int64
				m, err = io.Copy(io.NewOffsetWriter(out, pos), io.NewSectionReader(in, pos, want))
				n = int(m)
			}
			if err != nil {
				return "", err
			}
			if n == 0 {
				return "", io.ErrUnexpectedEOF
			}
			// Advisory: an error here shows again at the caller's fsync.
			unix.SyncFileRange(outFd, pos, int64(n), unix.SYNC_FILE_RANGE_WRITE)
			pos += int64(n)
		}
	}
	return method, nil
}
