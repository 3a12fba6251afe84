package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"vzd/internal/procfs"
)

const (
	sysBlock     = "/sys/block"
	pollInterval = 20 * time.Millisecond
	// detachWait bounds how long Unmount waits for autoclear to detach a
	// loop device after the last unmount before clearing it itself.
	detachWait = 2 * time.Second
)

// Loop is one bound loop device as the kernel shows it in sysfs.
type Loop struct {
	Dev         string // "/dev/loop3"
	Number      string // "7:3"
	BackingFile string // the image's path as the kernel resolved it
	Autoclear   bool
	DirectIO    bool
}

// Loops lists every bound loop device (from /sys/block/loopN/loop).
func Loops() ([]Loop, error) { return readLoops(true) }

// readLoops lists the bound loop devices; without flags it leaves
// Autoclear and DirectIO unread: a pass reads every device of the host,
// and two sysfs files fewer per device was a tenth of a no-op pass.
func readLoops(flags bool) ([]Loop, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	var out []Loop
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		dir := filepath.Join(sysBlock, name)
		bf, err := procfs.ReadFile(filepath.Join(dir, "loop", "backing_file"))
		if err != nil {
			continue // not bound (no loop/ directory) or gone meanwhile
		}
		l := Loop{
			Dev:         "/dev/" + name,
			Number:      loopNumber(name, dir),
			BackingFile: strings.TrimSuffix(string(bf), "\n"),
		}
		if flags {
			ac, _ := procfs.ReadFile(filepath.Join(dir, "loop", "autoclear"))
			dio, _ := procfs.ReadFile(filepath.Join(dir, "loop", "dio"))
			l.Autoclear = strings.TrimSpace(string(ac)) == "1"
			l.DirectIO = strings.TrimSpace(string(dio)) == "1"
		}
		out = append(out, l)
	}
	return out, nil
}

// loopNumbers remembers each loop device's "major:minor": it is fixed
// for the device's life (and the same when a removed device comes back
// under its name), and reading it was half of a pass's sysfs reads.
var loopNumbers sync.Map // name -> string

func loopNumber(name, dir string) string {
	if v, ok := loopNumbers.Load(name); ok {
		return v.(string)
	}
	b, err := procfs.ReadFile(filepath.Join(dir, "dev"))
	num := strings.TrimSpace(string(b))
	if err == nil && num != "" {
		loopNumbers.Store(name, num)
	}
	return num
}

// realPath resolves links in path; a missing path is returned cleaned.
func realPath(path string) string {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		return r
	}
	return filepath.Clean(path)
}

// findLoop returns the loop device that backs img, if any. The kernel
// shows a backing file deleted or renamed away with a " (deleted)" suffix
// or its new name, so a rebuilt image is never confused with the old one.
func findLoop(img string) (Loop, bool, error) {
	loops, err := Loops()
	if err != nil {
		return Loop{}, false, err
	}
	want := realPath(img)
	for _, l := range loops {
		if l.BackingFile == want {
			return l, true, nil
		}
	}
	return Loop{}, false, nil
}

// attach binds img to a free loop device with direct IO and autoclear, and
// returns the open device. The caller must keep it open until the file
// system is mounted: with autoclear the kernel detaches the device as soon
// as its last user goes, so a process that dies before mounting leaks
// nothing (see util-linux losetup(8) --detach-all and containerd
// core/mount/losetup_linux.go for the same ownership rule).
func (a *Actuator) attach(img string) (*os.File, string, error) {
	f, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", err
	}
	defer f.Close() // the loop device holds its own reference
	ctl, err := os.OpenFile(a.loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("attach %s: %w", img, err)
	}
	defer ctl.Close()

	flags := uint32(unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO)
	for attempt := 0; attempt < 32; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, "", fmt.Errorf("attach %s: %w: LOOP_CTL_GET_FREE: %v", img, ErrNoLoop, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // node not there yet; ask again
			}
			return nil, "", fmt.Errorf("attach %s: %w", img, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = flags
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return lf, dev, nil
		}
		lf.Close()
		switch {
		case errors.Is(err, unix.EBUSY):
			// Another attacher took the device between GET_FREE and
			// CONFIGURE: ask for another one.
			time.Sleep(time.Duration(attempt) * time.Millisecond)
		case errors.Is(err, unix.EINVAL) && flags&unix.LO_FLAGS_DIRECT_IO != 0:
			// The backing file system refuses direct IO at this block
			// size: attach buffered rather than not at all.
			a.log.Warn("loop direct io refused, attaching buffered", "image", img, "dev", dev)
			flags &^= unix.LO_FLAGS_DIRECT_IO
		default:
			return nil, "", fmt.Errorf("attach %s to %s: LOOP_CONFIGURE: %w", img, dev, err)
		}
	}
	return nil, "", fmt.Errorf("attach %s: %w: every device tried was busy", img, ErrNoLoop)
}

// openBound opens a loop device that is already bound and checks that it
// still is (a device in autoclear rundown answers ENXIO).
func openBound(dev string) (*os.File, error) {
	lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.IoctlLoopGetStatus64(int(lf.Fd())); err != nil {
		lf.Close()
		return nil, &os.PathError{Op: "LOOP_GET_STATUS64", Path: dev, Err: err}
	}
	return lf, nil
}

// setLoopCapacity makes the loop device re-read its backing file's size.
func setLoopCapacity(dev string) error {
	lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return &os.PathError{Op: "LOOP_SET_CAPACITY", Path: dev, Err: err}
	}
	return nil
}

// detach waits for autoclear to release the device backing img, and
// clears it itself when it is still bound afterwards (attached without
// autoclear by someone, or a kernel that defers the rundown).
func (a *Actuator) detach(ctx context.Context, img string) error {
	deadline := time.Now().Add(detachWait)
	cleared := false
	for {
		l, ok, err := findLoop(img)
		if err != nil || !ok {
			return err
		}
		if !l.Autoclear || time.Now().After(deadline) {
			if cleared {
				return fmt.Errorf("detach %s from %s: still bound (in use elsewhere?)", img, l.Dev)
			}
			// On a device still open elsewhere the kernel only sets
			// autoclear (a lazy detach): it goes when the last user does.
			if l.Autoclear {
				a.forcedDetach.Add(1)
				a.log.Warn("autoclear left the loop device bound after unmount; clearing it", "image", img, "dev", l.Dev)
			} else {
				a.log.Info("detaching a loop device attached without autoclear", "image", img, "dev", l.Dev)
			}
			lf, err := os.OpenFile(l.Dev, os.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("detach %s: %w", l.Dev, err)
			}
			err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
			lf.Close()
			if err != nil && !errors.Is(err, unix.ENXIO) {
				return fmt.Errorf("detach %s from %s: LOOP_CLR_FD: %w", img, l.Dev, err)
			}
			cleared = true
			deadline = time.Now().Add(detachWait)
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return fmt.Errorf("detach %s: %w", img, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
