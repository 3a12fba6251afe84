package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"vzd/spec"
)

// resizeAction is what Resize decides to do.
type resizeAction int

const (
	resizeNone          resizeAction = iota
	resizeGrowOnline                 // mounted: grow file, LOOP_SET_CAPACITY, resize2fs on the device
	resizeShrinkPending              // mounted: shrinking needs a stop
	resizeOffline                    // not in use: e2fsck -f, resize2fs on the file
	resizeBusy                       // attached but not mounted by us: wait
)

// decideResize is Resize's decision, free of I/O.
func decideResize(cur, want uint64, attached, mounted bool) resizeAction {
	switch {
	case want == cur:
		return resizeNone
	case mounted && want > cur:
		return resizeGrowOnline
	case mounted:
		return resizeShrinkPending
	case attached:
		return resizeBusy
	}
	return resizeOffline
}

// Resize brings the image's file system to c.Disk.Size (rounded down to
// its block size; zero changes nothing). Mounted, it grows online (the file, LOOP_SET_CAPACITY,
// resize2fs); when the kernel refuses that (no CAP_SYS_RESOURCE, as on
// hosts where root lacks it) the grow is recorded as pending and done
// offline at the next Mount, and pending is true. A shrink of a mounted
// image is pending too. Not mounted, it resizes offline; a shrink below
// what the data needs is refused with ErrDoesNotFit. The inode count is
// fixed at creation: resize2fs only adds or removes whole block groups.
func (a *Actuator) Resize(ctx context.Context, c *spec.Container) (pending bool, err error) {
	a.kernelChanged()
	defer a.kernelChanged()
	if err := checkContainer(c); err != nil {
		return false, err
	}
	unlock, err := a.lock(ctx, c)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("resize %s: %w", c.ID, ErrNoImage)
	}
	if err != nil {
		return false, err
	}
	defer unlock()

	img := imagePath(c)
	sb, err := readSuperblock(img)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("resize %s: %w", c.ID, ErrNoImage)
	}
	if err != nil {
		return false, err
	}
	loop, attached, err := findLoop(img)
	if err != nil {
		return false, err
	}
	ms, err := mountsAt(stagingPath(c))
	if err != nil {
		return false, err
	}
	m, mounted := ms[stagingPath(c)]
	mounted = mounted && attached && devNumber(m) == loop.Number
	cur, want := sb.Size(), roundDown(c.Disk.Size, sb.BlockSize)
	if want == 0 {
		want = cur // no size set: nothing to change (DefaultSize is for Create only)
	}
	log := a.log.With("container", c.ID, "from", cur, "to", want)

	switch decideResize(cur, want, attached, mounted) {
	case resizeNone:
		if !attached {
			// A shrink that died between resize2fs and the truncate
			// leaves the file longer than the file system.
			if fi, err := os.Stat(img); err == nil && uint64(fi.Size()) > cur {
				if err := os.Truncate(img, int64(cur)); err != nil {
					return false, err
				}
			}
		}
		return false, clearPending(c)
	case resizeGrowOnline:
		return a.growOnline(ctx, c, img, loop.Dev, want)
	case resizeShrinkPending:
		log.Info("shrink pending until the container is stopped")
		return true, setPending(c, want)
	case resizeBusy:
		log.Info("resize pending: image attached but not mounted")
		return true, setPending(c, want)
	}
	if err := a.resizeOffline(ctx, c, img, want); err != nil {
		return false, err
	}
	return false, clearPending(c)
}

// growOnline grows a mounted image. The file and the loop device grow
// first; resize2fs then asks the kernel (EXT4_IOC_RESIZE_FS) to take the
// space, which needs CAP_SYS_RESOURCE. Refused, the longer file is kept
// (harmless: the file system does not use it) and the grow is pending.
func (a *Actuator) growOnline(ctx context.Context, c *spec.Container, img, dev string, want uint64) (bool, error) {
	fi, err := os.Stat(img)
	if err != nil {
		return false, err
	}
	if uint64(fi.Size()) < want {
		if err := os.Truncate(img, int64(want)); err != nil {
			return false, a.spaceErr(fmt.Errorf("grow %s: %w", img, err), img)
		}
	}
	if err := a.setCapacity(dev); err != nil {
		return false, fmt.Errorf("grow %s: %w", img, err)
	}
	out, err := a.runTool(ctx, nil, "resize2fs", dev, sizeArg(want))
	if err != nil {
		if onlineRefused(out) {
			a.log.Info("online grow refused by the kernel; pending until the container is restarted",
				"container", c.ID, "dev", dev, "to", want)
			return true, setPending(c, want)
		}
		return false, fmt.Errorf("grow %s online: %w", img, err)
	}
	a.log.Info("image grown online", "container", c.ID, "dev", dev, "to", want)
	return false, clearPending(c)
}

// onlineRefused recognises resize2fs's report of the kernel refusing an
// online resize: EPERM from EXT4_IOC_RESIZE_FS without CAP_SYS_RESOURCE
// ("Permission denied to resize filesystem") or an older kernel's
// "Operation not permitted".
func onlineRefused(out []byte) bool {
	s := string(out)
	return strings.Contains(s, "Permission denied to resize filesystem") ||
		strings.Contains(s, "Operation not permitted") ||
		strings.Contains(s, "Kernel does not support online resizing")
}

// resizeOffline resizes the unattached image at img to want bytes:
// e2fsck -f -p unless the file system was checked since its last mount
// (resize2fs insists on that; a template image checked once when it was
// built is not checked again for every copy), for a
// shrink resize2fs -P to refuse what cannot fit, then resize2fs on the
// file. The file is grown before and truncated after, so a crash in
// between leaves a file at least as long as its file system.
func (a *Actuator) resizeOffline(ctx context.Context, c *spec.Container, img string, want uint64) error {
	sb, err := readSuperblock(img)
	if err != nil {
		return err
	}
	if !sb.Checked() {
		if _, err := a.runTool(ctx, []int{1}, "e2fsck", "-f", "-p", img); err != nil {
			return fmt.Errorf("check %s before resize: %w", img, err)
		}
		if sb, err = readSuperblock(img); err != nil {
			return err
		}
	}
	cur := sb.Size()
	if want < cur {
		out, err := a.runTool(ctx, nil, "resize2fs", "-P", img)
		if err != nil {
			return fmt.Errorf("estimate minimum size of %s: %w", img, err)
		}
		minBlocks, err := parseMinSize(out)
		if err != nil {
			return fmt.Errorf("estimate minimum size of %s: %w", img, err)
		}
		if min := minBlocks * sb.BlockSize; want < min {
			return fmt.Errorf("shrink %s to %d bytes: %w (needs at least %d bytes)", c.ID, want, ErrDoesNotFit, min)
		}
	} else {
		fi, err := os.Stat(img)
		if err != nil {
			return err
		}
		if uint64(fi.Size()) < want {
			if err := os.Truncate(img, int64(want)); err != nil {
				return a.spaceErr(fmt.Errorf("grow %s: %w", img, err), img)
			}
		}
	}
	if _, err := a.runTool(ctx, nil, "resize2fs", img, sizeArg(want)); err != nil {
		return a.spaceErr(fmt.Errorf("resize %s: %w", img, err), img)
	}
	if want < cur {
		if err := os.Truncate(img, int64(want)); err != nil {
			return err
		}
	}
	a.log.Info("image resized offline", "container", c.ID, "from", cur, "to", want)
	return nil
}

func clearPending(c *spec.Container) error {
	if _, err := os.Stat(recordPath(c)); err != nil {
		return nil // no record (a template copy in progress): nothing pending
	}
	return setPending(c, 0)
}

// sizeArg is resize2fs's size argument: KiB, which every block size divides.
func sizeArg(bytes uint64) string { return strconv.FormatUint(bytes/1024, 10) + "K" }

// parseMinSize reads "Estimated minimum size of the filesystem: N" (in
// file system blocks) from resize2fs -P.
func parseMinSize(out []byte) (uint64, error) {
	const key = "Estimated minimum size of the filesystem:"
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
		}
	}
	return 0, fmt.Errorf("no estimate in resize2fs output %q", bytes.TrimSpace(out))
}
