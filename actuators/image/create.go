package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Create makes the container's private area and image. Without srcImage
// the image is a fresh sparse file formatted by mkfs.ext4 (size from
// c.Disk.Size, inode count from c.Disk.Inodes) holding an empty root/;
// with one (a template cache image, ext4 with the same root/ layout) it
// is a sparse copy of it, resized offline to c.Disk.Size, or a copy of the
// template's presized copy at that size when there is one (PresizedPath).
// The inode count of a copy is the template's, scaled by resize2fs with
// the size.
//
// The image is built under a temporary name and renamed into place when
// complete, so a complete image is never formatted again and a half-built
// one (left by a crash) is removed and rebuilt. An existing image that is
// not ext4 is refused with ErrNotExt4. Create also makes $VE_PRIVATE/ve.conf
// a link to the container's config file. On failure nothing is left that
// this call made: a private area it created is removed again.
func (a *Actuator) Create(ctx context.Context, c *spec.Container, srcImage string) (retErr error) {
	a.kernelChanged()
	defer a.kernelChanged()
	if err := checkContainer(c); err != nil {
		return err
	}
	_, err := os.Lstat(c.Private)
	fresh := errors.Is(err, fs.ErrNotExist)
	if err := os.MkdirAll(c.Private, 0o700); err != nil {
		return a.spaceErr(fmt.Errorf("create private area %s: %w", c.Private, err), filepath.Dir(c.Private))
	}
	unlock, err := a.lock(ctx, c)
	if err != nil {
		return err
	}
	defer unlock()
	if fresh {
		defer func() {
			if retErr != nil {
				a.unregister(c)
			}
		}()
	}

	img := imagePath(c)
	sb, err := readSuperblock(img)
	switch {
	case err == nil:
		// Complete (only complete images carry the final name).
	case errors.Is(err, fs.ErrNotExist):
		if sb, err = a.build(ctx, c, srcImage); err != nil {
			return err
		}
	default:
		return err // ErrNotExt4 included: never reformat
	}
	r, err := readRecord(c)
	if err != nil {
		return err
	}
	if r.Version == 0 {
		r = record{CreatedSize: sb.Size(), CreatedInodes: sb.Inodes, Source: srcImage}
		if err := writeRecord(c, r); err != nil {
			return a.spaceErr(err, c.Private)
		}
		a.stepDone("create:record")
	}
	return a.linkConfig(c)
}

// build makes the image under its temporary name and renames it into place.
func (a *Actuator) build(ctx context.Context, c *spec.Container, src string) (sb superblock, retErr error) {
	img := imagePath(c)
	tmp := img + tmpSuffix
	dir := filepath.Dir(img)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return sb, a.spaceErr(err, dir)
	}
	if err := os.Remove(tmp); err == nil {
		a.log.Info("removed half-built image", "container", c.ID, "path", tmp)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sb, err
	}
	defer func() {
		if retErr != nil {
			os.Remove(tmp)
		}
	}()
	size := a.size(c)
	var err error
	if src == "" {
		err = a.format(ctx, c, tmp, size)
	} else {
		err = a.copyTemplate(ctx, c, src, tmp, size)
	}
	if err != nil {
		return sb, a.spaceErr(err, dir)
	}
	// Durable before it gets its final name: a direct copy's data has
	// reached the device but may sit in its cache, and the extents it
	// allocated are metadata in ext4's journal; fsync flushes both.
	if err := syncPath(tmp); err != nil {
		return sb, a.spaceErr(err, dir)
	}
	a.stepDone("create:built")
	if sb, err = readSuperblock(tmp); err != nil {
		return sb, err
	}
	if err := os.Rename(tmp, img); err != nil {
		return sb, err
	}
	if err := syncPath(dir); err != nil {
		return sb, err
	}
	a.log.Info("image created", "container", c.ID, "path", img, "size", sb.Size(), "inodes", sb.Inodes, "template", src)
	a.stepDone("create:renamed")
	return sb, nil
}

// format makes a sparse file of size bytes and an ext4 file system on it
// with an empty root/. mkfs.ext4 -d puts root/ in without a mount. The
// itable and journal are initialised lazily (the kernel zeroes the inode
// tables in the background after the first mount), which keeps the file
// sparse and mkfs fast. -m 0: the container's root is not uid 0 of the
// file system's owner, so reserved blocks would only be lost space.
func (a *Actuator) format(ctx context.Context, c *spec.Container, tmp string, size uint64) error {
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create image %s: %w", tmp, err)
	}
	a.stepDone("create:truncated")
	if err := os.MkdirAll(filepath.Join(c.Private, recordDir), 0o700); err != nil {
		return err
	}
	seed := filepath.Join(c.Private, recordDir, "mkfs")
	defer os.RemoveAll(seed)
	if err := os.MkdirAll(filepath.Join(seed, RootDir), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(seed, 0o755); err != nil {
		return err
	}
	args := []string{"-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", seed}
	if c.Disk.Inodes > 0 {
		args = append(args, "-N", strconv.FormatUint(c.Disk.Inodes, 10))
	}
	args = append(args, tmp)
	if _, err := a.runTool(ctx, nil, "mkfs.ext4", args...); err != nil {
		return fmt.Errorf("format %s: %w", tmp, err)
	}
	return nil
}

// copyTemplate copies the template image src sparse to tmp and resizes the
// copy offline to size. When the template comes with a copy of itself
// already at that size (see PresizedPath), that one is copied instead and
// no resize2fs runs; for a size above DefaultSize, the copy at
// DefaultSize is the one copied and grown.
func (a *Actuator) copyTemplate(ctx context.Context, c *spec.Container, src, tmp string, size uint64) error {
	ssb, err := readSuperblock(src)
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if !ssb.Clean() {
		return fmt.Errorf("template %s: file system not clean (state %#x): rebuild the template", src, ssb.State)
	}
	// The presized copy at the container's size, or else the one at the
	// default size when the container is larger: growing that adds fewer
	// block groups (a shrink would cost more than the grow from src).
	from := src
	want := roundDown(size, ssb.BlockSize)
	for _, ps := range []uint64{want, DefaultSize} {
		if want == ssb.Size() || ps > want || ps <= ssb.Size() {
			continue
		}
		p := PresizedPath(src, ps)
		if psb, err := readSuperblock(p); err == nil && psb.Clean() && psb.Size() == ps && psb.BlockSize == ssb.BlockSize {
			from, ssb = p, psb
			break
		}
	}
	// A mounted file system copied is an inconsistent copy. One mounted
	// read-write shows in its superblock (needs_recovery, so not Clean,
	// and a later mount time), which is read again after the copy; that
	// it is attached to a loop device at all is asked while the copy runs:
	// with a loop device per running container, reading sysfs for each
	// costs more than the copy's own CPU.
	type loopAnswer struct {
		dev string
		ok  bool
		err error
	}
	attached := make(chan loopAnswer, 1)
	go func() {
		dev, ok, err := backingLoop(from)
		attached <- loopAnswer{dev, ok, err}
	}()
	how, err := CopySparse(tmp, from)
	l := <-attached
	if err != nil {
		return err
	}
	if l.err != nil {
		return l.err
	}
	if l.ok {
		return fmt.Errorf("template %s is in use (attached to %s)", from, l.dev)
	}
	if after, err := readSuperblock(from); err != nil {
		return fmt.Errorf("template: %w", err)
	} else if after != ssb {
		return fmt.Errorf("template %s changed while it was copied (mounted?)", from)
	}
	a.log.Debug("template copied", "container", c.ID, "src", from, "method", how)
	a.stepDone("create:copied")
	if want == ssb.Size() {
		return nil
	}
	return a.resizeOffline(ctx, c, tmp, want)
}

// PresizedPath is where a template image src (a name ending in .img) may
// have a copy of itself already grown to size bytes:
// <src without .img>.<size>.img. Create copies that one for a container
// of that size, which saves the copy its resize2fs run (a sizeable part
// of creating a container). It must be complete under that name (written
// under another and renamed), ext4, clean, and exactly size bytes; else
// it is ignored. The template cache (package templates) makes one at the
// default disk size; containers larger than that copy it and grow it.
func PresizedPath(src string, size uint64) string {
	return strings.TrimSuffix(src, ".img") + "." + strconv.FormatUint(size, 10) + ".img"
}

// backingLoop tells whether a loop device is bound to img, reading only
// each device's backing file (what findLoop reads is more).
func backingLoop(img string) (dev string, ok bool, err error) {
	loops, err := readLoops(false)
	if err != nil {
		return "", false, err
	}
	want := realPath(img)
	for _, l := range loops {
		if l.BackingFile == want {
			return l.Dev, true, nil
		}
	}
	return "", false, nil
}

// linkConfig points $VE_PRIVATE/ve.conf at the container's config file.
// A regular file there (a legacy private area keeps the real ve.conf) is
// left alone.
func (a *Actuator) linkConfig(c *spec.Container) error {
	target := c.Source.File
	if target == "" {
		return nil
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(a.paths.ConfigDir, target)
	}
	link := filepath.Join(c.Private, confLink)
	cur, err := os.Readlink(link)
	switch {
	case err == nil && cur == target:
		return nil
	case err == nil, errors.Is(err, fs.ErrNotExist):
	default:
		a.log.Warn("ve.conf is not a link; left as it is", "container", c.ID, "path", link)
		return nil
	}
	tmp := link + tmpSuffix
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return a.spaceErr(fmt.Errorf("link %s: %w", link, err), c.Private)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

// unregister removes what a failed Create left in a private area it
// created: only the names Create makes, then the directory if empty.
func (a *Actuator) unregister(c *spec.Container) {
	img := imagePath(c)
	for _, p := range []string{
		img + tmpSuffix, img, filepath.Dir(img),
		filepath.Join(c.Private, recordDir, "mkfs", RootDir), filepath.Join(c.Private, recordDir, "mkfs"),
		recordPath(c), filepath.Join(c.Private, recordDir),
		filepath.Join(c.Private, confLink), filepath.Join(c.Private, confLink+tmpSuffix),
		c.Private,
	} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("cleanup after failed create", "container", c.ID, "path", p, "err", err)
		}
	}
}

// spaceErr makes a failure on a full file system say so: it wraps
// unix.ENOSPC (errors.Is works) and names the directory and the space
// left, whatever the tool said.
func (a *Actuator) spaceErr(err error, dir string) error {
	if err == nil || errors.Is(err, unix.ENOSPC) {
		return err
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return err
	}
	// A tool reports ENOSPC in its own words; trust the words, or a file
	// system with (almost) nothing left.
	free := st.Bavail * uint64(st.Bsize)
	if free >= 1<<20 && !strings.Contains(err.Error(), "No space left on device") {
		return err
	}
	return fmt.Errorf("%w on the file system of %s (%d bytes free): %w", unix.ENOSPC, dir, free, err)
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

func roundDown(n, unit uint64) uint64 {
	if unit == 0 {
		return n
	}
	return n / unit * unit
}
