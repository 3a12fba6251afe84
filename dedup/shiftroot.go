package dedup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Unprivileged containers on overlays.
//
// An overlay mount cannot be idmapped, so an unprivileged container's
// overlay is built for its id range instead: by host root, from idmapped
// lower layers (meta and root, owned 0..65535 on disk and seen as
// base..base+65535) and the store's objects (a data-only layer: only its
// data is read, owners come from the stubs), over an upper (delta) whose
// files are owned base+uid on disk, not idmapped. The container sees its
// own ids through its user namespace; what it writes lands in delta owned
// by base+uid; other containers, the base and the store are untouched.
//
// Two overlay instances must never share an upper, and the host's tools
// (application templates in a chroot, resolver and hostname files, the
// template record) write into c.Root as host root thinking in container
// ids. So c.Root is one of two things:
//
//   - between starts, the host's view (MountRoot → hostView): overlay(lower=
//     root, upper=delta) where delta and work are seen through an idmapped
//     mount with the inverse mapping (disk base+N is N), so the tree shows
//     0..65535 and host root's writes land in delta as base+N; no cache
//     layers. A container with no delta yet gets a plain bind of root.
//   - from Start on, the container's overlay itself (ShiftRoot replaces the
//     host's view with it), so that writes made through c.Root while the
//     container runs reach the same overlay. Files written there keep their
//     directory's owner (safefile), which is the container's root.
//
// The next MountRoot (after Unmount) makes it the host's view again.

// fsDirOf is where the images actuator mounts c's image (its staging
// directory, $VE_PRIVATE/mnt).
func fsDirOf(c *spec.Container) string { return filepath.Join(c.Private, "mnt") }

// hostView mounts the host's view of an unprivileged container at c.Root.
func (m *Mounter) hostView(c *spec.Container, fsDir string) error {
	log := m.log.With("container", c.ID)
	root := c.Root
	base := filepath.Join(fsDir, baseName)
	delta := filepath.Join(fsDir, deltaName)
	work := filepath.Join(fsDir, workName)
	if !exists(delta) {
		return mountPlain(log, root, base, delta, work)
	}
	shift := readShift(delta)
	if shift != (idShift{}) {
		err := inverseView(root, fsDir, shift)
		if err == nil {
			log.Info("root mounted", "root", root, "mode", "overlay", "delta_ids", shift.String())
			return makePrivate(root)
		}
		// Without the inverse mapping (no user namespace to be had, say),
		// the delta goes back to container ids on disk: a walk now and
		// one at the next start, but the same view.
		log.Warn("delta shifted back for the host's view", "err", err)
		if err := reshift(fsDir, idShift{}, false); err != nil {
			return err
		}
	}
	return mountPlain(log, root, base, delta, work)
}

// inverseView mounts at root overlay(lower=root, upper=delta, work=work)
// with delta and work seen through an idmapped mount that maps shift+N on
// disk to N.
func inverseView(root, fsDir string, shift idShift) error {
	if err := resetWork(filepath.Join(fsDir, workName), shift); err != nil {
		return err
	}
	ns, err := usernsFor(shift, idShift{})
	if err != nil {
		return err
	}
	defer ns.Close()
	// Upper and work must be on one mount: an idmapped clone of the
	// whole image, of which the overlay keeps its own private clone.
	fsm, err := idmappedClone(fsDir, int(ns.Fd()))
	if err != nil {
		return err
	}
	defer unix.Close(fsm)
	lower, err := idmappedClone(filepath.Join(fsDir, baseName), -1)
	if err != nil {
		return err
	}
	defer unix.Close(lower)
	upper, err := openDir(fsm, deltaName)
	if err != nil {
		return err
	}
	defer unix.Close(upper)
	wd, err := openDir(fsm, workName)
	if err != nil {
		return err
	}
	defer unix.Close(wd)
	mfd, err := buildOverlay(root, layers{lowers: []int{lower}, data: -1, upper: upper, work: wd})
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", root, err)
	}
	return nil
}

// ShiftRoot makes c.Root the root of unprivileged container c for the id
// range starting at uidBase/gidBase, whose user namespace is userns (an
// open /proc/PID/ns/user), when the container uses cache layers or has a
// delta, and reports true: c.Root is then an overlay already owned by the
// container's host ids, which the runtime passes on as it is (an overlay
// cannot be idmapped). It reports false, changing nothing the runtime can
// see, when c.Root is a plain view of the image's root, to be idmapped by
// the runtime as usual (no delta and no cache layers, a privileged
// container, or a root not mounted from an image's file system).
//
// On the way, the container's latest stubs are taken into use (as at a
// mount) and its delta is shifted to the range when it was made for
// another one (or by a privileged run): a walk over delta only. Cache
// problems fall back to an overlay without the cache layers.
func (m *Mounter) ShiftRoot(ctx context.Context, c *spec.Container, uidBase, gidBase uint32, userns int) (bool, error) {
	if c.Privileged || c.Private == "" {
		return false, nil
	}
	fsDir := fsDirOf(c)
	base := filepath.Join(fsDir, baseName)
	delta := filepath.Join(fsDir, deltaName)
	work := filepath.Join(fsDir, workName)
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		return false, nil
	}
	useCache := m.cache.Enabled() && !c.NoDedup &&
		(exists(filepath.Join(fsDir, metaName)) || exists(filepath.Join(fsDir, metaNext)))
	if !useCache && !exists(delta) {
		return false, nil // c.Root is the bind of root/ made by MountRoot
	}
	log := m.log.With("container", c.ID)
	// A root whose top is owned by the container's host root is the
	// overlay of an earlier run (its init exited with no stop and unmount
	// after it: a crash); the host's view shows container ids. Host tools
	// may have written into it meanwhile (a chroot as host root): the
	// delta is walked for ids left unshifted even if its shift is right.
	var st unix.Stat_t
	repair := unix.Stat(c.Root, &st) == nil && uidBase != 0 && st.Uid == uidBase
	// Whatever is at c.Root goes: the host's view (another overlay on
	// the same upper must not stay mounted), or a stale instance of an
	// earlier run of this container.
	if err := unmountAll(c.Root); err != nil {
		return false, err
	}
	var stubs []stub
	if useCache {
		var err error
		if stubs, err = m.cache.prepare(c.ID, c.Root, fsDir); err != nil {
			log.Warn("cache not used for mount", "err", err)
		}
	}
	if len(stubs) == 0 && !exists(delta) {
		if err := unix.Mount(base, c.Root, "", unix.MS_BIND, ""); err != nil {
			return false, fmt.Errorf("bind %s on %s: %w", base, c.Root, err)
		}
		log.Info("root mounted", "root", c.Root, "mode", "bind")
		return false, makePrivate(c.Root)
	}
	ids := idShift{uidBase, gidBase}
	if err := ensureUpper(base, delta, work); err != nil {
		return false, err
	}
	if from := readShift(delta); from != ids || repair {
		log.Info("shifting delta", "from", from.String(), "to", ids.String(), "repair", repair)
	}
	if err := reshift(fsDir, ids, repair); err != nil {
		m.cache.unpin(c.ID)
		return false, err
	}
	mfd, mode, err := m.userOverlay(c, fsDir, stubs, userns)
	if err != nil {
		m.cache.unpin(c.ID)
		return false, err
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, c.Root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		m.cache.unpin(c.ID)
		return false, fmt.Errorf("mount overlay on %s: %w", c.Root, err)
	}
	log.Info("root mounted", "root", c.Root, "mode", mode, "cached_files", len(stubs), "ids", ids.String())
	return true, makePrivate(c.Root)
}

// userOverlay builds (detached) the overlay of an unprivileged container:
// with the cache layers when there are stubs and the kernel takes them,
// else without.
func (m *Mounter) userOverlay(c *spec.Container, fsDir string, stubs []stub, userns int) (int, string, error) {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	// Lower layers: clones idmapped onto the container's range. Upper,
	// work and the objects: the directories as they are (upper and work
	// must be on one mount: the image's).
	open := func(p string, ns int) (int, error) {
		var fd int
		var err error
		if ns >= 0 {
			fd, err = idmappedClone(p, ns)
		} else {
			fd, err = openDir(unix.AT_FDCWD, p)
		}
		if err == nil {
			fds = append(fds, fd)
		}
		return fd, err
	}
	lower, err := open(filepath.Join(fsDir, baseName), userns)
	if err != nil {
		return -1, "", err
	}
	upper, err := open(filepath.Join(fsDir, deltaName), -1)
	if err != nil {
		return -1, "", err
	}
	work, err := open(filepath.Join(fsDir, workName), -1)
	if err != nil {
		return -1, "", err
	}
	if len(stubs) > 0 {
		mfd, err := func() (int, error) {
			meta, err := open(filepath.Join(fsDir, metaName), userns)
			if err != nil {
				return -1, err
			}
			objects, err := open(m.cache.objectsRoot(), -1)
			if err != nil {
				return -1, err
			}
			return buildOverlay(c.Root, layers{lowers: []int{meta, lower}, data: objects, upper: upper, work: work})
		}()
		if err == nil {
			return mfd, "overlay+cache", nil
		}
		m.log.Warn("cache layers not used", "container", c.ID, "err", err)
		m.cache.unpin(c.ID)
	}
	mfd, err := buildOverlay(c.Root, layers{lowers: []int{lower}, data: -1, upper: upper, work: work})
	return mfd, "overlay", err
}

// layers are an overlay's layers as open directories (mount clones or
// O_PATH descriptors). data -1: no data-only layer.
type layers struct {
	lowers      []int
	data        int
	upper, work int
}

// openDir opens the directory name below dirfd as an O_PATH descriptor
// (a layer for buildOverlay), not following a symbolic link. dirfd may be
// unix.AT_FDCWD.
func openDir(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return fd, nil
}

// buildOverlay makes a detached overlay mount from layers given as
// descriptors (fsconfig FSCONFIG_SET_FD, Linux 6.13+): the idmapped clones
// are used without being attached anywhere. Metacopy and redirects are on,
// as for every overlay of a container (see mountOverlay). The caller owns
// the returned mount fd; the layer descriptors stay the caller's.
func buildOverlay(target string, l layers) (int, error) {
	if l.upper < 0 || l.work < 0 {
		return -1, fmt.Errorf("mount overlay on %s: %w", target, errors.New("upper or work directory missing"))
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("mount overlay on %s: fsopen: %w", target, err)
	}
	defer unix.Close(fd)
	set := func(key string, v int) error {
		if err := unix.FsconfigSetFd(fd, key, v); err != nil {
			return fmt.Errorf("mount overlay on %s: %s: %w%s", target, key, err, fsLog(fd))
		}
		return nil
	}
	for _, lo := range l.lowers {
		if err := set("lowerdir+", lo); err != nil {
			return -1, err
		}
	}
	if l.data >= 0 {
		if err := set("datadir+", l.data); err != nil {
			return -1, err
		}
	}
	if err := set("upperdir", l.upper); err != nil {
		return -1, err
	}
	if err := set("workdir", l.work); err != nil {
		return -1, err
	}
	for _, kv := range [][2]string{{"metacopy", "on"}, {"redirect_dir", "on"}} {
		if err := unix.FsconfigSetString(fd, kv[0], kv[1]); err != nil {
			return -1, fmt.Errorf("mount overlay on %s: %s=%s: %w%s", target, kv[0], kv[1], err, fsLog(fd))
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return -1, fmt.Errorf("mount overlay on %s: %w%s", target, err, fsLog(fd))
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("mount overlay on %s: fsmount: %w%s", target, err, fsLog(fd))
	}
	return mfd, nil
}

// unmountAll unmounts every mount stacked at dir. Not mounted is success.
// A view some host process still holds (busy) is detached lazily, so a
// start is not blocked by a shell left in the directory.
func unmountAll(dir string) error {
	for range 8 {
		err := unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: too many stacked mounts", dir)
}
