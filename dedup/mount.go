package dedup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Mounter builds a container's root view at c.Root from its mounted image.
// It is the images actuator's RootMounter when dedup is configured.
type Mounter struct {
	cache *Cache // nil: never use cache layers
	log   *slog.Logger
}

// Mounter returns the root mounter that uses this cache.
func (c *Cache) Mounter() *Mounter { return &Mounter{cache: c, log: c.log} }

// PlainMounter returns a root mounter that never uses cache layers, for a
// node whose cache could not be opened. It still mounts containers that
// once ran on an overlay as overlays, so they show the same tree.
func PlainMounter(log *slog.Logger) *Mounter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mounter{log: log.With("component", "dedup")}
}

// MountRoot mounts the root of container c (its image mounted at fsDir,
// base tree in fsDir/root) at c.Root. For a privileged container:
//
//   - overlay(upper=delta, lower=meta:root::objects) when the container has
//     valid stubs and the cache may be used for it (enabled, not NoDedup);
//   - overlay(upper=delta, lower=root) when the container has a delta (it
//     ran on an overlay before, and its writes are there) but no usable stubs;
//   - a bind mount of root otherwise (a container that never ran with dedup).
//
// For an unprivileged container it mounts the host's view (hostView): the
// container's tree owned by its ids 0..65535, as the host's tools expect,
// without cache layers; the runtime builds the container's own overlay at
// start (ShiftRoot).
//
// Stubs whose object is missing or damaged, or whose base file changed, are
// removed first. Problems with the cache are logged and fall back to the
// container's own files: the cache never fails a start.
func (m *Mounter) MountRoot(ctx context.Context, c *spec.Container, fsDir string) error {
	root := c.Root
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", root, err)
	}
	if ok, err := mountinfo.Mounted(root); err != nil {
		return fmt.Errorf("check mount %s: %w", root, err)
	} else if ok {
		return nil
	}
	base := filepath.Join(fsDir, baseName)
	delta := filepath.Join(fsDir, deltaName)
	work := filepath.Join(fsDir, workName)
	log := m.log.With("container", c.ID)
	if !c.Privileged {
		return m.hostView(c, fsDir)
	}
	// A delta an unprivileged run left shifted is the host's ids again.
	if exists(delta) {
		if err := reshift(fsDir, idShift{}, false); err != nil {
			return err
		}
	}
	if m.cache.Enabled() && !c.NoDedup {
		stubs, err := m.cache.prepare(c.ID, root, fsDir)
		if err != nil {
			log.Warn("cache not used for mount", "err", err)
		}
		if len(stubs) > 0 {
			if err := ensureUpper(base, delta, work); err != nil {
				return err
			}
			err := mountOverlay(root, []string{filepath.Join(fsDir, metaName), base}, m.cache.objectsRoot(), delta, work)
			if err == nil {
				log.Info("root mounted", "root", root, "mode", "overlay+cache", "cached_files", len(stubs))
				return makePrivate(root)
			}
			log.Warn("cache layers not used", "err", err)
			m.cache.unpin(c.ID)
		}
	}
	return mountPlain(log, root, base, delta, work)
}

// mountPlain mounts a root without cache layers: overlay(lower=base,
// upper=delta) once the container has a delta (its writes are there), a
// bind of base before that.
func mountPlain(log *slog.Logger, root, base, delta, work string) error {
	if exists(delta) {
		if err := ensureUpper(base, delta, work); err != nil {
			return err
		}
		if err := mountOverlay(root, []string{base}, "", delta, work); err != nil {
			return err
		}
		log.Info("root mounted", "root", root, "mode", "overlay")
		return makePrivate(root)
	}
	if err := unix.Mount(base, root, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", base, root, err)
	}
	log.Info("root mounted", "root", root, "mode", "bind")
	return makePrivate(root)
}

// makePrivate keeps mounts made under the root (by the container) and
// under its parent (by the host) from propagating to each other.
func makePrivate(root string) error {
	if err := unix.Mount("", root, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", root, err)
	}
	return nil
}

// UnmountRoot unmounts the container's root and releases its pins. An
// unmounted root is not an error.
func (m *Mounter) UnmountRoot(ctx context.Context, c *spec.Container) error {
	// Repeat for mounts stacked on the root (a crash between a mount and
	// its bookkeeping); bounded.
	for range 8 {
		err := unix.Unmount(c.Root, 0)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", c.Root, err)
		}
	}
	if m.cache.Enabled() {
		m.cache.unpin(c.ID)
	}
	return nil
}

// prepare takes the container's latest META into use, drops stubs that
// must not be used, pins the objects the rest refer to and counts the hit.
func (c *Cache) prepare(id, root, fsDir string) ([]stub, error) {
	unlock, err := c.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	ix, err := c.loadIndex()
	if err != nil {
		return nil, err
	}
	if err := promoteMeta(fsDir); err != nil {
		return nil, err
	}
	stubs, err := validateMeta(fsDir, func(s stub) bool { return c.objectOK(ix, s.Digest, s.Size) })
	if err != nil || len(stubs) == 0 {
		os.Remove(c.pinPath(id))
		return nil, err
	}
	p := pin{ID: id, Root: filepath.Clean(root), Time: c.now().Unix()}
	used := map[string]bool{}
	for _, s := range stubs {
		p.Bytes += s.Size
		if !used[s.Digest] {
			used[s.Digest] = true
			p.Objects = append(p.Objects, s.Digest)
			o := ix.Objects[s.Digest]
			o.Hits++
			o.LastUsed = p.Time
		}
	}
	if err := c.writePin(p); err != nil {
		return nil, err
	}
	if err := c.saveIndex(ix); err != nil {
		// Hit counts and LRU order only: the pin is what protects objects.
		c.log.Warn("cache index not updated", "err", err)
	}
	return stubs, nil
}

func (c *Cache) unpin(id string) {
	if err := os.Remove(c.pinPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("remove pin", "container", id, "err", err)
	}
}

// ensureUpper creates the overlay's upper and work directories. A new
// upper gets the base root's owner, mode and times: the upper's root is
// what the container sees as "/".
func ensureUpper(base, delta, work string) error {
	if !exists(delta) {
		tmp := delta + ".tmp"
		os.RemoveAll(tmp)
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", delta, err)
		}
		if err := copyDirMeta(base, ".", tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, delta); err != nil {
			return fmt.Errorf("create %s: %w", delta, err)
		}
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", work, err)
	}
	return nil
}

// mountOverlay mounts an overlay at target with the new mount API, which
// takes each layer as its own parameter (no escaping of ':' or ',' in
// paths) and reports the kernel's reason for a refusal. Metacopy and
// redirects are on for every overlay of a container, with or without the
// cache layers: a chmod in the container makes a metadata-only copy in
// delta that later mounts must follow to the data below.
func mountOverlay(target string, lowers []string, data, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("mount overlay on %s: fsopen: %w", target, err)
	}
	defer unix.Close(fd)
	params := [][2]string{}
	for _, l := range lowers {
		params = append(params, [2]string{"lowerdir+", l})
	}
	if data != "" {
		params = append(params, [2]string{"datadir+", data})
	}
	params = append(params,
		[2]string{"upperdir", upper},
		[2]string{"workdir", work},
		[2]string{"metacopy", "on"},
		[2]string{"redirect_dir", "on"},
	)
	for _, p := range params {
		if err := unix.FsconfigSetString(fd, p[0], p[1]); err != nil {
			return fmt.Errorf("mount overlay on %s: %s=%s: %w%s", target, p[0], p[1], err, fsLog(fd))
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("mount overlay on %s: %w%s", target, err, fsLog(fd))
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount overlay on %s: fsmount: %w%s", target, err, fsLog(fd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// fsLog returns the messages the kernel left on a file system context.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 8 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}
