package dedup

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ScanStats says what one scan did.
type ScanStats struct {
	Containers    int           `json:"containers"`
	Files         int           `json:"files"`        // eligible files seen
	HashedFiles   int           `json:"hashed_files"` // hashed this time
	HashedBytes   uint64        `json:"hashed_bytes"`
	ReusedDigests int           `json:"reused_digests"` // taken from the xattr, not hashed
	Ingested      int           `json:"ingested"`
	IngestedBytes uint64        `json:"ingested_bytes"`
	Changed       int           `json:"changed"`    // changed while copied: not cached
	NoRoom        int           `json:"no_room"`    // not cached: the store is full of pinned objects
	Corrupt       int           `json:"corrupt"`    // objects found damaged and removed
	Stubs         int           `json:"stubs"`      // stubs in the META trees written
	MetaBuilt     int           `json:"meta_built"` // containers whose META changed (next mount)
	Duration      time.Duration `json:"duration_ns"`
	CPU           ScanCPU       `json:"cpu"`
}

// ScanCPU is the process's CPU time (user + sys, getrusage) in each phase
// of a scan. In the agent it includes whatever else the process did
// meanwhile; for `vzd pfcache scan` it is the scan's.
type ScanCPU struct {
	Check time.Duration `json:"check_ns"` // the store's objects against its index
	Hash  time.Duration `json:"hash_ns"`  // walking the trees and hashing (HashedBytes)
	Store time.Duration `json:"store_ns"` // copying into the store
	Stubs time.Duration `json:"stubs_ns"` // writing the META trees
}

// processCPU returns the user + sys time of the process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ErrScanRunning is returned by Scan when another scan holds the store.
var ErrScanRunning = errors.New("a scan is already running")

type seen struct {
	id     string
	fsDir  string
	rel    string
	digest string
	st     unix.Stat_t
}

// Scan hashes the eligible files of the given containers (ID → mounted
// image, the directory holding root/), stores the files present in at
// least MinContainers of them, and writes each container's META for its
// cached files, taken into use at its next mount. Containers that must not
// share (spec.Container.NoDedup) are left out of trees by the caller.
func (c *Cache) Scan(ctx context.Context, trees map[string]string) (stats ScanStats, err error) {
	if !c.Enabled() {
		return stats, ErrDisabled
	}
	if !c.scanMu.TryLock() {
		return stats, ErrScanRunning
	}
	defer c.scanMu.Unlock()
	// Across processes (the agent and `vzd pfcache scan`).
	lf, err := os.OpenFile(filepath.Join(c.root, ".scan.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return stats, fmt.Errorf("lock scan: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return stats, ErrScanRunning
	}
	start := c.now()
	defer func() { stats.Duration = c.now().Sub(start) }()
	// phase adds the CPU time since the last call to *d.
	mark := processCPU()
	phase := func(d *time.Duration) {
		now := processCPU()
		*d += now - mark
		mark = now
	}

	err = c.checkObjects(ctx, &stats)
	phase(&stats.CPU.Check)
	if err != nil {
		return stats, err
	}

	ids := make([]string, 0, len(trees))
	for id := range trees {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var errs []error
	var jobs []*hashJob
	var walked []string // containers walked without error
	for _, id := range ids {
		js, t, err := c.walk(ctx, id, trees[id], &stats)
		if t != nil {
			defer t.close()
		}
		if ctx.Err() != nil {
			return stats, ctx.Err()
		}
		if err != nil {
			// One broken container does not stop the others.
			errs = append(errs, fmt.Errorf("scan %s: %w", id, err))
			continue
		}
		walked = append(walked, id)
		jobs = append(jobs, js...)
	}
	err = c.hashJobs(ctx, jobs, &stats)
	phase(&stats.CPU.Hash)
	if err != nil {
		return stats, err
	}
	byID := map[string][]seen{}
	holders := map[string]map[string]bool{} // digest → container IDs
	for _, id := range walked {
		stats.Containers++
		byID[id] = nil
	}
	for _, j := range jobs {
		if !j.ok {
			continue
		}
		byID[j.id] = append(byID[j.id], seen{id: j.id, fsDir: j.fsDir, rel: j.rel, digest: j.digest, st: j.st})
		if holders[j.digest] == nil {
			holders[j.digest] = map[string]bool{}
		}
		holders[j.digest][j.id] = true
	}

	unlock, err := c.lock()
	if err != nil {
		return stats, err
	}
	ix, err := c.loadIndex()
	unlock()
	if err != nil {
		return stats, err
	}
	present := map[string]bool{}
	var todo []seen // one source file per digest to ingest
	for _, id := range ids {
		for _, f := range byID[id] {
			if _, done := present[f.digest]; done {
				continue
			}
			if c.objectOK(ix, f.digest, uint64(f.st.Size)) {
				present[f.digest] = true
				continue
			}
			present[f.digest] = false
			if len(holders[f.digest]) >= c.cfg.MinContainers {
				todo = append(todo, f)
			}
		}
	}
	// Most shared first, so a full store holds what saves most.
	sort.SliceStable(todo, func(i, j int) bool {
		a, b := todo[i], todo[j]
		wa := uint64(len(holders[a.digest])-1) * uint64(a.st.Size)
		wb := uint64(len(holders[b.digest])-1) * uint64(b.st.Size)
		return wa > wb
	})
	for _, f := range todo {
		if ctx.Err() != nil {
			return stats, ctx.Err()
		}
		ok, err := c.ingest(ctx, f, holders, byID, &stats)
		if err != nil {
			errs = append(errs, err)
		}
		present[f.digest] = ok
	}
	phase(&stats.CPU.Store)
	defer phase(&stats.CPU.Stubs)

	for _, id := range ids {
		files, ok := byID[id]
		if !ok {
			continue
		}
		var stubs []stub
		for _, f := range files {
			if !present[f.digest] {
				continue
			}
			stubs = append(stubs, stub{Path: f.rel, Digest: f.digest, Size: uint64(f.st.Size),
				Ino: f.st.Ino, MtimeNs: f.st.Mtim.Nano(), CtimeNs: f.st.Ctim.Nano()})
		}
		sort.Slice(stubs, func(i, j int) bool { return stubs[i].Path < stubs[j].Path })
		stats.Stubs += len(stubs)
		built, err := c.updateMeta(trees[id], stubs)
		if err != nil {
			errs = append(errs, fmt.Errorf("write stubs of %s: %w", id, err))
			continue
		}
		if built {
			stats.MetaBuilt++
		}
	}
	c.log.Info("scan done", "containers", stats.Containers, "files", stats.Files,
		"hashed_bytes", stats.HashedBytes, "ingested", stats.Ingested, "stubs", stats.Stubs)
	return stats, errors.Join(errs...)
}

// updateMeta writes FS/meta.next for stubs unless the META the container
// has (or will have at its next mount) already holds exactly those.
func (c *Cache) updateMeta(fsDir string, stubs []stub) (bool, error) {
	want := func(path string) bool {
		m, err := readManifest(path)
		return err == nil && sameStubs(m.Stubs, stubs)
	}
	next := filepath.Join(fsDir, metaNext) + manifestExt
	if _, err := os.Stat(next); err == nil {
		if want(next) {
			return false, nil
		}
	} else if want(filepath.Join(fsDir, metaName)+manifestExt) || (len(stubs) == 0 && !exists(filepath.Join(fsDir, metaName))) {
		return false, nil
	}
	return true, buildMeta(fsDir, stubs, c.lock)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// ingest copies f into the store, making room by eviction when needed. A
// file that changed since it was hashed is tried in the next container
// holding the same digest.
func (c *Cache) ingest(ctx context.Context, f seen, holders map[string]map[string]bool, byID map[string][]seen, stats *ScanStats) (bool, error) {
	size := uint64(f.st.Size)
	unlock, err := c.lock()
	if err != nil {
		return false, err
	}
	ix, err := c.loadIndex()
	if err == nil {
		if room := c.room(ix); room < size {
			var freed uint64
			freed, err = c.evictLocked(ctx, size-room)
			if err == nil && freed+room < size {
				// Everything left is pinned: skip, never fail a container.
				stats.NoRoom++
				unlock()
				return false, nil
			}
		}
	}
	unlock()
	if err != nil {
		return false, err
	}
	// Candidates: every holder's copy, f's first.
	cands := []seen{f}
	for id := range holders[f.digest] {
		for _, g := range byID[id] {
			if g.digest == f.digest && (g.id != f.id || g.rel != f.rel) {
				cands = append(cands, g)
				break
			}
		}
	}
	for _, g := range cands {
		err := c.commit(ctx, filepath.Join(g.fsDir, baseName), g.rel, f.digest, size)
		if errors.Is(err, errChanged) {
			stats.Changed++
			c.log.Info("file changed while cached, skipped", "container", g.id, "path", g.rel)
			continue
		}
		if err != nil {
			return false, err
		}
		stats.Ingested++
		stats.IngestedBytes += size
		return true, nil
	}
	return false, nil
}

// walk returns the eligible files of one container, to be given their
// digests by hashJobs, and its base tree, open (the caller closes it).
func (c *Cache) walk(ctx context.Context, id, fsDir string, stats *ScanStats) ([]*hashJob, *tree, error) {
	base := filepath.Join(fsDir, baseName)
	t, err := openTree(base)
	if err != nil {
		return nil, nil, err
	}
	delta := filepath.Join(fsDir, deltaName)
	var out []*hashJob
	done := map[string]bool{}
	for _, dir := range c.cfg.Dirs {
		top := filepath.Join(base, filepath.Clean("/"+dir))
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == top && errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				// An unreadable subtree is skipped, not fatal.
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, _ := filepath.Rel(base, p)
			if done[rel] {
				return nil
			}
			done[rel] = true
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return nil
			}
			if !c.eligible(&st) {
				return nil
			}
			// The container changed or removed it: its delta hides the base.
			if existsBeneath(delta, rel) {
				return nil
			}
			stats.Files++
			out = append(out, &hashJob{id: id, fsDir: fsDir, rel: rel, tree: t})
			return nil
		})
		if err != nil {
			return nil, t, err
		}
	}
	return out, t, nil
}

// eligible applies the size and link rules. Hard links are left alone:
// overlayfs would show the linked names as separate files once one of
// them is a stub.
func (c *Cache) eligible(st *unix.Stat_t) bool {
	size := uint64(st.Size)
	return size >= c.cfg.MinSize && size <= c.cfg.MaxSize && st.Nlink == 1
}

// The xattr value: "<sha1 hex> <size> <mtime ns>".
func formatDigest(d string, st *unix.Stat_t) string {
	return d + " " + strconv.FormatInt(st.Size, 10) + " " + strconv.FormatInt(st.Mtim.Nano(), 10)
}

func parseDigest(v string, st *unix.Stat_t) (string, bool) {
	f := strings.Fields(v)
	if len(f) != 3 || len(f[0]) != 40 {
		return "", false
	}
	if _, err := hex.DecodeString(f[0]); err != nil {
		return "", false
	}
	size, err1 := strconv.ParseInt(f[1], 10, 64)
	mt, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || size != st.Size || mt != st.Mtim.Nano() {
		return "", false
	}
	return f[0], true
}

// checkObjects reconciles the index with the objects on disk: an object
// whose size or mtime changed since its commit is re-hashed and removed if
// damaged; an object on disk the index does not know (a crash after the
// rename) is verified and adopted; an indexed object that is gone is
// forgotten. Re-hashing happens outside the store's lock, so mounts never
// wait for it.
func (c *Cache) checkObjects(ctx context.Context, stats *ScanStats) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	ix, err := c.loadIndex()
	unlock()
	if err != nil {
		return err
	}
	onDisk := map[string]bool{}
	var doubt []string
	root := c.objectsRoot()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		digest := strings.ReplaceAll(rel, string(filepath.Separator), "")
		if len(digest) != 40 {
			return nil
		}
		onDisk[digest] = true
		if o := ix.Objects[digest]; o == nil || !c.objectOK(ix, digest, o.Size) {
			doubt = append(doubt, digest)
		}
		return nil
	})
	if err != nil {
		return err
	}
	verified := map[string]*unix.Stat_t{}
	for _, d := range doubt {
		ok, st := verifyObject(ctx, c.objectPath(d), d, c.buffer())
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ok {
			verified[d] = st
		}
	}

	unlock, err = c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if ix, err = c.loadIndex(); err != nil {
		return err
	}
	for _, d := range doubt {
		st := verified[d]
		var now unix.Stat_t
		if st != nil && (unix.Lstat(c.objectPath(d), &now) != nil || now.Mtim != st.Mtim || now.Size != st.Size) {
			continue // changed again while verified: judge it next scan
		}
		if st == nil {
			if o := ix.Objects[d]; o != nil && c.objectOK(ix, d, o.Size) {
				continue // recommitted meanwhile
			}
			stats.Corrupt++
			c.log.Warn("damaged cache object removed", "digest", d)
			os.Remove(c.objectPath(d))
			delete(ix.Objects, d)
			continue
		}
		o := ix.Objects[d]
		if o == nil {
			o = &object{LastUsed: c.now().Unix()}
			ix.Objects[d] = o
		}
		o.Size, o.MtimeNs = uint64(st.Size), st.Mtim.Nano()
	}
	for d := range ix.Objects {
		if !onDisk[d] {
			// Gone from disk; a commit that happened after our walk has
			// its object present now.
			if _, err := os.Lstat(c.objectPath(d)); errors.Is(err, fs.ErrNotExist) {
				delete(ix.Objects, d)
			}
		}
	}
	return c.saveIndex(ix)
}

func verifyObject(ctx context.Context, p, digest string, buf []byte) (bool, *unix.Stat_t) {
	f, err := os.Open(p)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.CopyBuffer(h, &ctxReader{ctx: ctx, r: f}, buf); err != nil {
		return false, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false, nil
	}
	return hex.EncodeToString(h.Sum(nil)) == digest, &st
}

// buffer returns the scan's read buffer for copying and verifying. Only a
// scan (one at a time, under scanMu) uses it, after hashing.
func (c *Cache) buffer() []byte {
	if c.bufs[0] == nil {
		c.bufs[0] = make([]byte, hashBufSize)
	}
	return c.bufs[0]
}
