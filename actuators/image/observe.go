package image

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"

	"vzd/spec"
)

// Observe reports the container's image as the kernel (loop devices,
// mountinfo, the superblock) and the record show it. It changes nothing.
// An image that is not ext4 is reported with Exists and not Complete.
func (a *Actuator) Observe(ctx context.Context, c *spec.Container) (State, error) {
	if err := checkContainer(c); err != nil {
		return State{}, err
	}
	img := imagePath(c)
	st := State{ImagePath: img}
	if fi, err := os.Stat(img); err == nil {
		st.Exists = true
		st.FileSize = uint64(fi.Size())
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	if _, err := os.Lstat(img + tmpSuffix); err == nil {
		st.Partial = true
	}
	if st.Exists {
		sb, err := readSuperblock(img)
		switch {
		case err == nil:
			st.Complete = true
			st.Size, st.Inodes, st.Clean = sb.Size(), sb.Inodes, sb.Clean()
		case !errors.Is(err, ErrNotExt4):
			return st, err
		}
	}
	snap, err := a.snapshot()
	if err != nil {
		return st, err
	}
	loop, attached := snap.loops[snap.realPath(img)]
	if attached {
		st.Attached, st.LoopDev, st.DevNumber = true, loop.Dev, loop.Number
	}
	if m, ok := snap.mounts[snap.realPath(stagingPath(c))]; ok && attached && devNumber(m) == loop.Number {
		st.Mounted = true
	}
	_, st.RootMounted = snap.mounts[snap.realPath(c.Root)]
	r, err := readRecord(c)
	if err != nil {
		return st, err
	}
	if r.PendingSize != 0 && st.Complete && r.PendingSize != st.Size {
		st.PendingSize = r.PendingSize
		st.PendingGrow = r.PendingSize > st.Size
		st.PendingShrink = r.PendingSize < st.Size
	}
	return st, nil
}

// Found is an image under a private base that the kernel has attached.
type Found struct {
	ID          string   // the private area's directory name under the base
	Private     string   // the private area (real path)
	ImagePath   string   // the backing file as the kernel names it
	LoopDev     string   // "/dev/loopN"
	DevNumber   string   // "7:N"
	MountPoints []string // where the loop device is mounted, in mount order
}

// Scan lists the loop devices whose backing file lies under privateBase,
// with where each is mounted. It reads only the kernel (sysfs and
// mountinfo), so it finds what a crashed or restarted agent left.
func Scan(privateBase string) ([]Found, error) {
	base := realPath(privateBase)
	loops, err := Loops()
	if err != nil {
		return nil, err
	}
	byDev := map[string]*Found{}
	var out []*Found
	for _, l := range loops {
		rel, err := filepath.Rel(base, l.BackingFile)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		id, _, _ := strings.Cut(rel, string(filepath.Separator))
		f := &Found{ID: id, Private: filepath.Join(base, id), ImagePath: l.BackingFile, LoopDev: l.Dev, DevNumber: l.Number}
		byDev[l.Number] = f
		out = append(out, f)
	}
	if len(out) > 0 {
		infos, err := mountinfo.GetMounts(func(m *mountinfo.Info) (bool, bool) {
			_, ok := byDev[devNumber(m)]
			return !ok, false
		})
		if err != nil {
			return nil, err
		}
		for _, m := range infos {
			f := byDev[devNumber(m)]
			f.MountPoints = append(f.MountPoints, m.Mountpoint)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	res := make([]Found, len(out))
	for i, f := range out {
		res[i] = *f
	}
	return res, nil
}

// Attached returns, by private area name, every image under the private
// base that a loop device backs, for orphan reporting. Mounted means
// mounted at its staging directory.
func (a *Actuator) Attached(ctx context.Context) (map[string]State, error) {
	found, err := Scan(a.paths.PrivateBase())
	if err != nil {
		return nil, err
	}
	out := map[string]State{}
	for _, f := range found {
		st := State{
			Exists: true, Attached: true,
			ImagePath: f.ImagePath, LoopDev: f.LoopDev, DevNumber: f.DevNumber,
		}
		for _, mp := range f.MountPoints {
			if mp == filepath.Join(f.Private, stagingDir) {
				st.Mounted = true
			}
		}
		if sb, err := readSuperblock(f.ImagePath); err == nil {
			st.Complete, st.Size, st.Inodes = true, sb.Size(), sb.Inodes
		}
		out[f.ID] = st
	}
	return out, nil
}

// kernelSnapshot is every bound loop device (by backing file) and every
// mount (by mount point, the top one) at one moment.
type kernelSnapshot struct {
	at     time.Time
	gen    uint64
	loops  map[string]Loop
	mounts map[string]*mountinfo.Info

	realMu sync.Mutex
	real   map[string]string // path -> realPath(path), as of this snapshot
}

// realPath is realPath(path), remembering every directory on the way for
// the snapshot's life: the containers' paths share their first components
// (filepath.EvalSymlinks resolved each again: a third of a pass's
// system calls), and a snapshot is as stale as its loops and mounts.
func (s *kernelSnapshot) realPath(path string) string {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) || path == "/" {
		return realPath(path)
	}
	s.realMu.Lock()
	r, ok := s.real[path]
	s.realMu.Unlock()
	if ok {
		return r
	}
	dir := s.realPath(filepath.Dir(path))
	r = filepath.Join(dir, filepath.Base(path))
	if fi, err := os.Lstat(r); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		r = realPath(r)
	}
	s.realMu.Lock()
	if s.real == nil {
		s.real = map[string]string{}
	}
	s.real[path] = r
	s.realMu.Unlock()
	return r
}

// snapshotTTL bounds how stale a snapshot may be. Changes made through
// this Actuator invalidate it at once; a change made by someone else is
// seen within this time, and the loop is level-triggered anyway.
const snapshotTTL = 250 * time.Millisecond

// kernelChanged invalidates the snapshot: this Actuator is changing
// loop devices or mounts.
func (a *Actuator) kernelChanged() { a.gen.Add(1) }

// snapshot returns a fresh enough view of loop devices and mounts.
func (a *Actuator) snapshot() (*kernelSnapshot, error) {
	a.snapMu.Lock()
	defer a.snapMu.Unlock()
	gen := a.gen.Load()
	if s := a.snap; s != nil && s.gen == gen && time.Since(s.at) < snapshotTTL {
		return s, nil
	}
	loops, err := readLoops(false) // only backing files and numbers are looked up
	if err != nil {
		return nil, err
	}
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, err
	}
	s := &kernelSnapshot{at: time.Now(), gen: gen, loops: map[string]Loop{}, mounts: map[string]*mountinfo.Info{}}
	for _, l := range loops {
		s.loops[l.BackingFile] = l
	}
	for _, m := range infos { // in mount order: the last one is on top
		s.mounts[m.Mountpoint] = m
	}
	a.snap = s
	return s, nil
}
