package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Destroy unmounts the container's image and removes its private area
// and its (empty) root mount point. It removes only a private area that
// is a real directory inside the private base (ErrUnsafePath otherwise)
// with nothing mounted below it; links inside are removed, never followed.
// An absent private area is nil.
func (a *Actuator) Destroy(ctx context.Context, c *spec.Container) error {
	a.kernelChanged()
	defer a.kernelChanged()
	if err := checkContainer(c); err != nil {
		return err
	}
	unlock, err := a.lock(ctx, c)
	if errors.Is(err, fs.ErrNotExist) {
		if err := a.root.UnmountRoot(ctx, c); err != nil {
			return err
		}
		return removeEmptyDir(c.Root)
	}
	if err != nil {
		return err
	}
	defer unlock()
	real, err := a.ownedPrivate(c)
	if err != nil {
		return err
	}
	if err := a.unmount(ctx, c); err != nil {
		return fmt.Errorf("destroy %s: %w", c.ID, err)
	}
	below, err := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	if err != nil {
		return err
	}
	if len(below) > 0 {
		return fmt.Errorf("destroy %s: %s still mounted inside %s", c.ID, below[0].Mountpoint, real)
	}
	// os.RemoveAll works with openat/unlinkat and never follows a link.
	if err := os.RemoveAll(real); err != nil {
		return fmt.Errorf("destroy %s: %w", c.ID, err)
	}
	if err := removeEmptyDir(c.Root); err != nil {
		return err
	}
	a.log.Info("private area removed", "container", c.ID, "path", real)
	return nil
}

// ownedPrivate returns the real path of c.Private when it is this
// container's to remove: not itself a link, and strictly inside the
// node's private base (itself possibly behind a link, like /vz -> /data/vz).
func (a *Actuator) ownedPrivate(c *spec.Container) (string, error) {
	fi, err := os.Lstat(c.Private)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("destroy %s: %s: %w (a %s, not a directory)", c.ID, c.Private, ErrUnsafePath, fi.Mode().Type())
	}
	real, err := filepath.EvalSymlinks(c.Private)
	if err != nil {
		return "", err
	}
	base := realPath(a.paths.PrivateBase())
	rel, err := filepath.Rel(base, real)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("destroy %s: %s (really %s) is outside %s: %w", c.ID, c.Private, real, base, ErrUnsafePath)
	}
	if want := filepath.Join(realPath(filepath.Dir(c.Private)), filepath.Base(c.Private)); want != real {
		return "", fmt.Errorf("destroy %s: %s resolves to %s: %w", c.ID, c.Private, real, ErrUnsafePath)
	}
	return real, nil
}

func removeEmptyDir(dir string) error {
	err := os.Remove(dir)
	if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
