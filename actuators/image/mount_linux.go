package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/spec"
)

// mountsAt returns the top mount at each of paths (resolved), keyed by
// the path as given. A path that is not a mount point is absent.
func mountsAt(paths ...string) (map[string]*mountinfo.Info, error) {
	want := map[string]string{} // real path -> given path
	for _, p := range paths {
		want[realPath(p)] = p
	}
	infos, err := mountinfo.GetMounts(func(m *mountinfo.Info) (bool, bool) {
		_, ok := want[m.Mountpoint]
		return !ok, false
	})
	if err != nil {
		return nil, err
	}
	out := map[string]*mountinfo.Info{}
	for _, m := range infos { // in mount order, so the last one is on top
		out[want[m.Mountpoint]] = m
	}
	return out, nil
}

func devNumber(m *mountinfo.Info) string { return fmt.Sprintf("%d:%d", m.Major, m.Minor) }

// unmount unmounts everything stacked at path. Not mounted (EINVAL) and
// absent (ENOENT) are success, as in containerd core/mount/mount_unix.go.
func unmount(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil, errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return &os.PathError{Op: "umount", Path: path, Err: err}
		}
	}
	return fmt.Errorf("umount %s: too many stacked mounts", path)
}

// BindMounter is the default RootMounter: c.Root is a private bind mount
// of fsDir/root. Private, so that mounts made under either side do not
// propagate to the other or to the host's peer groups.
type BindMounter struct{}

// MountRoot implements RootMounter.
func (BindMounter) MountRoot(ctx context.Context, c *spec.Container, fsDir string) error {
	src := filepath.Join(fsDir, RootDir)
	ms, err := mountsAt(c.Root, fsDir)
	if err != nil {
		return err
	}
	if m, ok := ms[c.Root]; ok {
		if fm, ok := ms[fsDir]; ok && devNumber(fm) != devNumber(m) {
			return fmt.Errorf("root %s: already mounted from %s (%s), not from the image", c.Root, m.Source, devNumber(m))
		}
		return nil
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, c.Root, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, c.Root, err)
	}
	if err := unix.Mount("", c.Root, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", c.Root, err)
	}
	return nil
}

// UnmountRoot implements RootMounter.
func (BindMounter) UnmountRoot(ctx context.Context, c *spec.Container) error {
	return unmount(c.Root)
}

// Mount attaches the container's image (direct IO, autoclear), checks its
// file system when it was not cleanly unmounted, applies a resize left
// pending, mounts it at the staging directory and has the RootMounter
// make c.Root. Each part already done (found in the kernel) is skipped, so
// an image is never attached twice. A missing image wraps ErrNoImage.
func (a *Actuator) Mount(ctx context.Context, c *spec.Container) error {
	a.kernelChanged()
	defer a.kernelChanged()
	if err := checkContainer(c); err != nil {
		return err
	}
	unlock, err := a.lock(ctx, c)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mount %s: %w", c.ID, ErrNoImage)
	}
	if err != nil {
		return err
	}
	defer unlock()
	return a.mount(ctx, c)
}

func (a *Actuator) mount(ctx context.Context, c *spec.Container) error {
	img := imagePath(c)
	staging := stagingPath(c)
	log := a.log.With("container", c.ID)
	sb, err := readSuperblock(img)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mount %s: %w", c.ID, ErrNoImage)
	}
	if err != nil {
		return err
	}
	loop, attached, hold, err := a.boundLoop(ctx, img)
	if err != nil {
		return err
	}
	if hold != nil {
		defer hold.Close()
	}
	ms, err := mountsAt(staging)
	if err != nil {
		return err
	}
	m, mounted := ms[staging]
	if mounted && (!attached || devNumber(m) != loop.Number) {
		return fmt.Errorf("mount %s: staging %s holds %s (%s), not the image", c.ID, staging, m.Source, devNumber(m))
	}
	if !mounted {
		dev := loop.Dev
		if !attached {
			if err := a.prepareOffline(ctx, c, img, sb); err != nil {
				return err
			}
			hold, dev, err = a.attach(img)
			if err != nil {
				return err
			}
			// Closing hold after the mount (or on failure) lets autoclear
			// detach the device once nothing uses it.
			defer hold.Close()
			log.Debug("image attached", "image", img, "dev", dev)
			a.stepDone("mount:attached")
		}
		if err := os.MkdirAll(staging, 0o700); err != nil {
			return err
		}
		if err := unix.Mount(dev, staging, "ext4", 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", dev, staging, err)
		}
		if err := unix.Mount("", staging, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", staging, err)
		}
		log.Info("image mounted", "image", img, "dev", dev, "dir", staging)
		a.stepDone("mount:staging")
	}
	if err := a.root.MountRoot(ctx, c, staging); err != nil {
		return fmt.Errorf("mount root of %s: %w", c.ID, err)
	}
	a.stepDone("mount:root")
	return nil
}

// boundLoop finds the loop device backing img and opens it, so that it
// stays bound while Mount uses it: bound by someone who still holds it
// (with autoclear an unused device is gone), it is mounted rather than a
// second one attached. A device in autoclear rundown (its last user just
// went) answers ENXIO; then wait for the kernel to finish and report it
// unattached.
func (a *Actuator) boundLoop(ctx context.Context, img string) (Loop, bool, *os.File, error) {
	for i := 0; ; i++ {
		l, ok, err := findLoop(img)
		if err != nil || !ok {
			return l, false, nil, err
		}
		f, err := openBound(l.Dev)
		if err == nil {
			return l, true, f, nil
		}
		if !errors.Is(err, unix.ENXIO) || i*int(pollInterval) > int(detachWait) {
			return l, false, nil, fmt.Errorf("open %s backing %s: %w", l.Dev, img, err)
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return l, false, nil, err
		}
	}
}

// prepareOffline runs before an image is attached: e2fsck -p when the file
// system was not cleanly unmounted, and a resize that waited for a stop
// (the online grow this machine refuses, or a shrink).
func (a *Actuator) prepareOffline(ctx context.Context, c *spec.Container, img string, sb superblock) error {
	if !sb.Clean() {
		a.log.Info("checking file system", "container", c.ID, "image", img, "state", sb.State)
		// e2fsck -p exits 1 when it fixed something: that is success.
		if _, err := a.runTool(ctx, []int{1}, "e2fsck", "-p", img); err != nil {
			return fmt.Errorf("check %s: %w", img, err)
		}
	}
	want := roundDown(c.Disk.Size, sb.BlockSize)
	if want == 0 || want == sb.Size() { // no size set: keep the image's
		return clearPending(c)
	}
	err := a.resizeOffline(ctx, c, img, want)
	if errors.Is(err, ErrDoesNotFit) {
		// The container keeps its size and starts; Resize reports this.
		a.log.Warn("shrink refused at mount", "container", c.ID, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	return clearPending(c)
}

// Unmount removes the root view, unmounts the staging mount and makes
// sure the loop device is gone. Absent parts are skipped; an absent
// container is nil.
func (a *Actuator) Unmount(ctx context.Context, c *spec.Container) error {
	a.kernelChanged()
	defer a.kernelChanged()
	if err := checkContainer(c); err != nil {
		return err
	}
	unlock, err := a.lock(ctx, c)
	if errors.Is(err, fs.ErrNotExist) {
		return a.root.UnmountRoot(ctx, c) // no private area: at most a stray root view
	}
	if err != nil {
		return err
	}
	defer unlock()
	return a.unmount(ctx, c)
}

func (a *Actuator) unmount(ctx context.Context, c *spec.Container) error {
	if err := a.root.UnmountRoot(ctx, c); err != nil {
		return fmt.Errorf("unmount root of %s: %w", c.ID, err)
	}
	if err := unmount(stagingPath(c)); err != nil {
		return err
	}
	// Autoclear detaches the loop device on the last unmount; detach
	// checks that it did.
	if err := a.detach(ctx, imagePath(c)); err != nil {
		return err
	}
	a.log.Debug("image unmounted", "container", c.ID)
	return nil
}
