package dedup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// mountStore makes sure the store's ext4 image (dir/pfcache.img, created
// sparse with size bytes) is mounted at mnt. The image is the store's own so
// that filling it never fills the disk of the containers' images.
func mountStore(ctx context.Context, log *slog.Logger, dir, mnt string, size uint64) error {
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", mnt, err)
	}
	if ok, err := mountinfo.Mounted(mnt); err != nil {
		return fmt.Errorf("check mount %s: %w", mnt, err)
	} else if ok {
		return nil
	}
	img := filepath.Join(dir, "pfcache.img")
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		if err := makeImage(ctx, img, size); err != nil {
			return err
		}
		log.Info("cache image created", "image", img, "size", size)
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", img, err)
	} else if out, err := exec.CommandContext(ctx, "e2fsck", "-p", img).CombinedOutput(); err != nil {
		// Exit status 1 means errors were corrected; more is a failure.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("e2fsck %s: %w: %s", img, err, out)
		}
	}
	dev, hold, err := attachLoop(img)
	if err != nil {
		return err
	}
	// An autoclear device is freed when its last opener goes: hold it
	// open until the mount has it.
	defer hold.Close()
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		// The loop device is autoclear: closing our descriptor frees it.
		return fmt.Errorf("mount %s on %s: %w", dev, mnt, err)
	}
	log.Info("cache image mounted", "image", img, "dev", dev, "mnt", mnt)
	return nil
}

func makeImage(ctx context.Context, img string, size uint64) (retErr error) {
	tmp := img + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	defer func() {
		if retErr != nil {
			os.Remove(tmp)
		}
	}()
	err = f.Truncate(int64(size))
	f.Close()
	if err != nil {
		return fmt.Errorf("size %s: %w", tmp, err)
	}
	// -m 0: no blocks reserved for root, the store is not a system disk.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-L", "pfcache", tmp).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", tmp, err, out)
	}
	if err := os.Rename(tmp, img); err != nil {
		return fmt.Errorf("create %s: %w", img, err)
	}
	return nil
}

// attachLoop attaches img to a free loop device with LOOP_CONFIGURE,
// autoclear (the device goes away with its last user, the mount) and
// direct IO (the image's pages are not cached twice: once for the backing
// file, once for the file system inside).
func attachLoop(img string) (string, *os.File, error) {
	back, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open %s: %w", img, err)
	}
	defer back.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open loop-control: %w", err)
	}
	defer ctl.Close()
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("get free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", nil, fmt.Errorf("open %s: %w", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:], img)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) {
			// Direct IO needs aligned backing storage; fall back to buffered.
			cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
			err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			// Another process took it between GET_FREE and CONFIGURE.
			lf.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			lf.Close()
			return "", nil, fmt.Errorf("configure %s for %s: %w", dev, img, err)
		}
		return dev, lf, nil
	}
	return "", nil, fmt.Errorf("attach %s: no free loop device", img)
}

// mountPoints returns the mount points of this mount namespace.
func mountPoints() (map[string]bool, error) {
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		out[m.Mountpoint] = true
	}
	return out, nil
}
