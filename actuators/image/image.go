// Package image owns a container's private area and its root image: a
// sparse file holding an ext4 file system, attached through a loop device
// (direct IO, autoclear) and mounted for the container.
//
// A private area ($VE_PRIVATE) holds:
//
//	root.hdd/root.hdd      the image; built as root.hdd/root.hdd.tmp and renamed when complete
//	ve.conf                symlink to the container's config file
//	mnt/                   staging mount point of the image's file system
//	.vzd/image.json        state record: what the kernel cannot tell (sizes made with, pending resize)
//
// Inside the file system, root/ is the container's tree; delta/, work/ and
// meta/ are reserved for the dedup overlay view. $VE_ROOT is a view of
// mnt/root made by a RootMounter (a private bind mount by default).
//
// Lifecycle, every step idempotent and safe to repeat after a crash:
//
//	Create ──▶ Mount ──▶ Resize* ──▶ Unmount ──▶ Destroy
//	 (tmp, mkfs   (attach, fsck,      (root view,
//	  or copy,     mount staging,      staging; autoclear
//	  rename)      root view)          detaches the loop)
//
// The kernel is the source of truth: which loop device backs an image comes
// from /sys/block/loopN/loop/backing_file and what is mounted where from
// mountinfo, so a restarted agent finds everything again.
//
// Notes for callers:
//   - The inode count is fixed when the file system is made (mkfs.ext4 -N
//     from c.Disk.Inodes); a resize adds or drops whole block groups and
//     their inodes with them, and a copy of a template keeps the
//     template's inodes per group.
//   - Growing a mounted image needs CAP_SYS_RESOURCE in the kernel's
//     EXT4_IOC_RESIZE_FS; without it Resize reports the grow pending and
//     Mount does it offline at the next start.
//   - A template image that was never mounted after mkfs.ext4 -d, or was
//     checked with e2fsck -f after its last mount, is resized without a
//     check; otherwise every copy pays an e2fsck -f.
//   - A loop device stays bound while any mount namespace (a running
//     container's) still holds the file system: stop the container first.
//   - Linux only (loop devices, mountinfo).
package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Names inside a private area. Changing them breaks existing private areas.
const (
	imageDir   = "root.hdd"
	imageName  = "root.hdd"
	tmpSuffix  = ".tmp"
	stagingDir = "mnt"
	recordDir  = ".vzd"
	recordName = "image.json"
	confLink   = "ve.conf"
	// RootDir is the directory at the top of the image's file system that
	// holds the container's tree.
	RootDir = "root"
)

// DefaultSize is the image size used when a container says none.
const DefaultSize = 10 << 30

// Errors callers branch on.
var (
	// ErrNotExt4: the image (or template) holds no ext4 file system. It is
	// never reformatted: an operator must look at it.
	ErrNotExt4 = errors.New("not an ext4 file system")
	// ErrNoImage: the container has no complete image (Create first).
	ErrNoImage = errors.New("no image")
	// ErrDoesNotFit: a shrink was asked below what the data needs.
	ErrDoesNotFit = errors.New("data does not fit the requested size")
	// ErrUnsafePath: a private area is not where this container owns it
	// (a symbolic link, or outside the private base); nothing is removed.
	ErrUnsafePath = errors.New("private area is not owned by this container")
	// ErrNoLoop: no loop device could be had (all in use or the kernel's limit).
	ErrNoLoop = errors.New("no free loop device")
	// ErrToolMissing: an e2fsprogs program is not installed.
	ErrToolMissing = errors.New("tool missing: install the e2fsprogs package")
)

// RootMounter makes the container's root ($VE_ROOT, c.Root) a view of the
// image's file system mounted at fsDir. Both methods are idempotent;
// UnmountRoot of an absent view returns nil.
type RootMounter interface {
	MountRoot(ctx context.Context, c *spec.Container, fsDir string) error
	UnmountRoot(ctx context.Context, c *spec.Container) error
}

// Config configures an Actuator.
type Config struct {
	Paths       spec.Paths
	Log         *slog.Logger // nil = discard
	Runner      Runner       // nil = ExecRunner (runs the e2fsprogs tools)
	RootMounter RootMounter  // nil = BindMounter (private bind of fsDir/root)
}

// Actuator creates, mounts, resizes and destroys container images.
// Its methods may be called concurrently for different containers; calls
// for one container are serialised (in process, and across processes by
// a flock on the private area).
type Actuator struct {
	paths spec.Paths
	log   *slog.Logger
	run   Runner
	root  RootMounter

	// step is called after each durable step; crash tests kill the
	// process there. Nil in production.
	step func(name string)
	// Kernel seams replaced by unit tests.
	setCapacity func(dev string) error
	loopControl string

	// snap caches the node-wide views Observe needs (every loop device,
	// every mount), so that observing n containers in one pass reads them
	// once, not n times (see snapshot).
	snapMu sync.Mutex
	snap   *kernelSnapshot
	gen    atomic.Uint64

	// forcedDetach counts loop devices Unmount had to clear itself
	// because autoclear had not released them; tests expect none.
	forcedDetach atomic.Int64

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New returns an Actuator.
func New(cfg Config) (*Actuator, error) {
	a := &Actuator{
		paths:       cfg.Paths,
		log:         cfg.Log,
		run:         cfg.Runner,
		root:        cfg.RootMounter,
		setCapacity: setLoopCapacity,
		loopControl: "/dev/loop-control",
		locks:       map[string]*sync.Mutex{},
	}
	if a.paths.Prefix == "" {
		a.paths.Prefix = "/"
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.run == nil {
		a.run = ExecRunner{}
	}
	if a.root == nil {
		a.root = BindMounter{}
	}
	return a, nil
}

// Name is the actuator's name in logs and plans.
func (a *Actuator) Name() string { return "image" }

// State is what the kernel and the record say about one container's image.
type State struct {
	Exists      bool   `json:"exists"`       // the image file is in place (under its final name)
	Complete    bool   `json:"complete"`     // and holds an ext4 file system
	Partial     bool   `json:"partial"`      // a half-built image (temporary name) is present
	Attached    bool   `json:"attached"`     // a loop device backs it
	Mounted     bool   `json:"mounted"`      // its file system is mounted at the staging directory
	RootMounted bool   `json:"root_mounted"` // c.Root is a mount point
	Clean       bool   `json:"clean"`        // the superblock says cleanly unmounted (meaningful when not attached)
	ImagePath   string `json:"image_path"`
	LoopDev     string `json:"loop_dev,omitempty"`   // "/dev/loopN"
	DevNumber   string `json:"dev_number,omitempty"` // "7:3", for blkio throttling
	Size        uint64 `json:"size"`                 // file system bytes
	FileSize    uint64 `json:"file_size"`            // apparent size of the image file
	Inodes      uint64 `json:"inodes"`               // fixed at creation (ext4 cannot change it)
	PendingGrow bool   `json:"pending_grow"`         // an online grow was refused; done at next mount
	// PendingShrink: a shrink waits for the container to be stopped.
	PendingShrink bool   `json:"pending_shrink"`
	PendingSize   uint64 `json:"pending_size,omitempty"` // the size a pending resize goes to
}

func imagePath(c *spec.Container) string {
	return filepath.Join(c.Private, imageDir, imageName)
}

func stagingPath(c *spec.Container) string { return filepath.Join(c.Private, stagingDir) }

func (a *Actuator) size(c *spec.Container) uint64 {
	if c.Disk.Size == 0 {
		return DefaultSize
	}
	return c.Disk.Size
}

func checkContainer(c *spec.Container) error {
	switch {
	case c == nil:
		return errors.New("nil container")
	case c.ID == "":
		return errors.New("container without id")
	case !filepath.IsAbs(c.Private) || filepath.Clean(c.Private) == "/":
		return fmt.Errorf("container %s: private area %q is not an absolute path", c.ID, c.Private)
	case !filepath.IsAbs(c.Root) || filepath.Clean(c.Root) == "/":
		return fmt.Errorf("container %s: root %q is not an absolute path", c.ID, c.Root)
	}
	return nil
}

// lock serialises work on one container: a mutex in this process and a
// flock on the private directory against other processes (the CLI next to
// the agent). The flock dies with the process, so a crash never leaves it
// held. It returns fs.ErrNotExist when the private area does not exist.
func (a *Actuator) lock(ctx context.Context, c *spec.Container) (func(), error) {
	a.mu.Lock()
	m := a.locks[c.Private]
	if m == nil {
		m = &sync.Mutex{}
		a.locks[c.Private] = m
	}
	a.mu.Unlock()
	m.Lock()
	d, err := os.Open(c.Private)
	if err != nil {
		m.Unlock()
		return nil, err
	}
	for {
		err = unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			d.Close()
			m.Unlock()
			return nil, &os.PathError{Op: "flock", Path: c.Private, Err: err}
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			d.Close()
			m.Unlock()
			return nil, fmt.Errorf("lock %s: %w", c.Private, err)
		}
	}
	return func() { d.Close(); m.Unlock() }, nil
}

func (a *Actuator) stepDone(name string) {
	if a.step != nil {
		a.step(name)
	}
}
