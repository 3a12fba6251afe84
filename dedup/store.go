package dedup

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"vzd/spec"
)

// Defaults returns the configuration of a node like the one vzd was
// measured on (2 cores with SHA-NI, fast local disk).
func Defaults() spec.DedupConfig {
	return spec.DedupConfig{
		Enabled:       true,
		Schedule:      "@every 1h", // robfig/cron spec
		MinSize:       4 << 10,     // bytes: smaller files save less than a stub costs
		MaxSize:       256 << 20,   // bytes
		MinContainers: 2,
		Dirs:          []string{"bin", "lib", "lib64", "sbin", "usr", "opt", "etc"},
		CacheSize:     4 << 30, // bytes: size of the store's image
	}
}

// withDefaults fills the zero fields of d (except Enabled, whose zero value
// is meaningful) from Defaults.
func withDefaults(d spec.DedupConfig) spec.DedupConfig {
	def := Defaults()
	if d.Schedule == "" {
		d.Schedule = def.Schedule
	}
	if d.MinSize == 0 {
		d.MinSize = def.MinSize
	}
	if d.MaxSize == 0 {
		d.MaxSize = def.MaxSize
	}
	if d.MinContainers <= 0 {
		d.MinContainers = def.MinContainers
	}
	if len(d.Dirs) == 0 {
		d.Dirs = def.Dirs
	}
	if d.CacheSize == 0 {
		d.CacheSize = def.CacheSize
	}
	return d
}

// Config configures a Cache.
type Config struct {
	Paths spec.Paths
	Dedup spec.DedupConfig
	Log   *slog.Logger
	// PlainDir keeps the store in the plain directory PFCacheDir()/mnt
	// instead of its own ext4 image mounted there (tests, or a node whose
	// PFCacheDir is already a file system of its own). Dedup.CacheSize
	// still bounds the bytes stored.
	PlainDir bool
}

// Cache is the content-addressed store and the scans that fill it.
type Cache struct {
	cfg    spec.DedupConfig
	paths  spec.Paths
	log    *slog.Logger
	root   string // the store: objects/, ingest/, pins/, index.json
	scanMu sync.Mutex
	bufs   [2][]byte // read buffers of the running scan (see hashJobs)
	now    func() time.Time
}

// Store layout under the cache root.
const (
	objectsDir = "objects"
	ingestDir  = "ingest"
	pinsDir    = "pins"
	indexFile  = "index.json"
	lockFile   = ".lock"
)

// ErrDisabled is returned by Scan when dedup is disabled in the global
// configuration.
var ErrDisabled = errors.New("dedup disabled")

// New opens the store, creating and mounting its image when needed. With
// dedup disabled it opens nothing: Scan returns ErrDisabled and the Mounter
// mounts containers without the cache layers.
func New(cfg Config) (*Cache, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		cfg:   withDefaults(cfg.Dedup),
		paths: cfg.Paths,
		log:   log.With("component", "dedup"),
		root:  filepath.Join(cfg.Paths.PFCacheDir(), "mnt"),
		now:   time.Now,
	}
	if !c.cfg.Enabled {
		return c, nil
	}
	if !cfg.PlainDir {
		if err := mountStore(context.Background(), c.log, cfg.Paths.PFCacheDir(), c.root, c.cfg.CacheSize); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{objectsDir, ingestDir, pinsDir} {
		if err := os.MkdirAll(filepath.Join(c.root, d), 0o700); err != nil {
			return nil, fmt.Errorf("create cache store: %w", err)
		}
	}
	// Ingest files left by a crash are garbage.
	leftovers, _ := filepath.Glob(filepath.Join(c.root, ingestDir, "*"))
	for _, p := range leftovers {
		os.Remove(p)
	}
	return c, nil
}

// Close releases the cache. The store stays mounted: the overlays of
// running containers use it as a layer.
func (c *Cache) Close() error { return nil }

// Enabled reports whether the cache is in use on this node.
func (c *Cache) Enabled() bool { return c != nil && c.cfg.Enabled }

// Root is the directory of the store (the mount point of its image).
func (c *Cache) Root() string { return c.root }

func (c *Cache) objectsRoot() string { return filepath.Join(c.root, objectsDir) }

// objectRel is the path of an object below objects/, which is also the
// absolute redirect a stub carries into the data-only layer.
func objectRel(digest string) string { return "/" + digest[:2] + "/" + digest[2:] }

func (c *Cache) objectPath(digest string) string {
	return filepath.Join(c.objectsRoot(), digest[:2], digest[2:])
}

// object is what the index knows of one stored object.
type object struct {
	Size     uint64 `json:"size"`
	MtimeNs  int64  `json:"mtime_ns"`  // of the object file at commit: a later write changes it
	LastUsed int64  `json:"last_used"` // unix seconds of the last commit or mount using it
	Hits     uint64 `json:"hits"`      // container mounts served by it
}

type index struct {
	Objects map[string]*object `json:"objects"`
}

// lock takes the store's lock (flock on a fresh descriptor, so it excludes
// other goroutines as well as other vzd processes such as the CLI).
func (c *Cache) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(c.root, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	return func() { f.Close() }, nil
}

func (c *Cache) loadIndex() (*index, error) {
	ix := &index{Objects: map[string]*object{}}
	b, err := os.ReadFile(filepath.Join(c.root, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return ix, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cache index: %w", err)
	}
	if err := json.Unmarshal(b, ix); err != nil {
		// The index is a cache of what is on disk: rebuild it rather than
		// refuse to work (Scan re-verifies objects it does not know).
		c.log.Warn("cache index unreadable, starting empty", "err", err)
		return &index{Objects: map[string]*object{}}, nil
	}
	if ix.Objects == nil {
		ix.Objects = map[string]*object{}
	}
	return ix, nil
}

func (c *Cache) saveIndex(ix *index) error {
	b, err := json.Marshal(ix)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(c.root, indexFile), b, 0o600); err != nil {
		return fmt.Errorf("write cache index: %w", err)
	}
	return nil
}

// objectOK reports whether the object for digest is present and unchanged
// since its commit (same size and mtime: any write to it changes the
// mtime). It does not re-hash: Scan does that for objects it doubts.
func (c *Cache) objectOK(ix *index, digest string, size uint64) bool {
	o := ix.Objects[digest]
	if o == nil || o.Size != size {
		return false
	}
	var st unix.Stat_t
	if err := unix.Lstat(c.objectPath(digest), &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) == o.Size && st.Mtim.Nano() == o.MtimeNs
}

var errChanged = errors.New("file changed while being copied")

// commit copies the file rel below root into the store as the object for
// digest. The copy is hashed as it is written and only a copy whose digest
// matches is renamed into place, so a file changed between hashing and
// copying is never cached with the wrong content (errChanged).
func (c *Cache) commit(ctx context.Context, root, rel, digest string, size uint64) (retErr error) {
	in, _, err := openRegular(root, rel)
	if err != nil {
		return err
	}
	defer in.Close()
	src := in.Name()
	tmp, err := c.ingestFile()
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		if retErr != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := sha1.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: io.LimitReader(in, int64(size)+1)}, c.buffer())
	if err != nil {
		return fmt.Errorf("copy %s into cache: %w", src, err)
	}
	if uint64(n) != size || hex.EncodeToString(h.Sum(nil)) != digest {
		return errChanged
	}
	return c.publish(tmp, digest, size)
}

// ingestFile creates a file in ingest/ to copy an object into.
func (c *Cache) ingestFile() (*os.File, error) {
	tmp, err := os.CreateTemp(filepath.Join(c.root, ingestDir), "ingest-")
	if err != nil {
		return nil, fmt.Errorf("create ingest file: %w", err)
	}
	return tmp, nil
}

// publish makes the ingest file tmp, whose content is known to have the
// given digest and size, the object for digest (place) and indexes it. The
// caller closes tmp, and removes it when publish fails.
func (c *Cache) publish(tmp *os.File, digest string, size uint64) error {
	o, err := c.place(tmp, digest, size)
	if err != nil || o == nil {
		return err
	}
	return c.indexObjects(map[string]*object{digest: o})
}

// place makes the ingest file tmp, whose content is known to have the given
// digest and size, the object for digest: read-only, synced and renamed into
// objects/. It returns what the index is to know of it, or nil when the
// object was there already (tmp is then removed). Until it is indexed the
// object is not used, and a scan adopts it if a crash loses that.
func (c *Cache) place(tmp *os.File, digest string, size uint64) (*object, error) {
	if err := tmp.Chmod(0o444); err != nil {
		return nil, fmt.Errorf("commit %s: %w", digest, err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("commit %s: %w", digest, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(tmp.Fd()), &st); err != nil {
		return nil, fmt.Errorf("commit %s: %w", digest, err)
	}
	dst := c.objectPath(digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, fmt.Errorf("commit %s: %w", digest, err)
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		// Content addressed: whoever came first stored the same bytes.
		os.Remove(tmp.Name())
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", digest, err)
	}
	// The object is in place and complete. Failing to sync its directory
	// only risks losing it in a crash, which the index check at mount time
	// detects, so it is logged rather than returned (as containerd's
	// content writer does after its rename).
	if err := syncDir(filepath.Dir(dst)); err != nil {
		c.log.Warn("sync cache directory", "dir", filepath.Dir(dst), "err", err)
	}
	return &object{Size: size, MtimeNs: st.Mtim.Nano(), LastUsed: c.now().Unix()}, nil
}

// indexObjects adds placed objects to the index.
func (c *Cache) indexObjects(objs map[string]*object) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	ix, err := c.loadIndex()
	if err != nil {
		return err
	}
	for d, o := range objs {
		ix.Objects[d] = o
	}
	return c.saveIndex(ix)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// pin records that a mounted container uses objects, so eviction keeps
// them. It is written before the mount and removed after the unmount.
type pin struct {
	ID      string   `json:"id"`
	Root    string   `json:"root"` // mount point of the container's root
	Objects []string `json:"objects"`
	Bytes   uint64   `json:"bytes"` // of the container's files served from the cache
	Time    int64    `json:"time"`  // unix seconds when written
}

// pinGrace is how long a pin counts before its mount exists: MountRoot
// writes the pin, then mounts.
const pinGrace = 2 * time.Minute

func (c *Cache) pinPath(id string) string {
	return filepath.Join(c.root, pinsDir, url.PathEscape(id)+".json")
}

func (c *Cache) writePin(p pin) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(c.pinPath(p.ID), b, 0o600); err != nil {
		return fmt.Errorf("write pin of %s: %w", p.ID, err)
	}
	return nil
}

// pins returns the live pins: those whose root is mounted, or written
// within pinGrace. A pin whose container is gone (a crash between mount and
// unmount bookkeeping) stops counting once its root is no longer mounted.
func (c *Cache) pins() ([]pin, error) {
	ents, err := os.ReadDir(filepath.Join(c.root, pinsDir))
	if err != nil {
		return nil, fmt.Errorf("read pins: %w", err)
	}
	mounted, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var out []pin
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.root, pinsDir, e.Name()))
		if err != nil {
			continue
		}
		var p pin
		if json.Unmarshal(b, &p) != nil {
			continue
		}
		if mounted[filepath.Clean(p.Root)] || c.now().Sub(time.Unix(p.Time, 0)) < pinGrace {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// usedBytes is the sum of the sizes of the indexed objects.
func (ix *index) usedBytes() uint64 {
	var n uint64
	for _, o := range ix.Objects {
		n += o.Size
	}
	return n
}

// room returns how many bytes may still be stored: the least of the
// configured size minus what is stored and the file system's free space.
func (c *Cache) room(ix *index) uint64 {
	var room uint64
	if used := ix.usedBytes(); used < c.cfg.CacheSize {
		room = c.cfg.CacheSize - used
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(c.root, &sfs); err == nil {
		// Keep 1% of the file system for metadata and the index.
		free := sfs.Bavail * uint64(sfs.Bsize)
		reserve := sfs.Blocks * uint64(sfs.Bsize) / 100
		if free < reserve {
			free = 0
		} else {
			free -= reserve
		}
		room = min(room, free)
	}
	return room
}

// Evict removes the least recently used objects that no mounted container
// uses until at least need bytes are freed or none is left to evict.
func (c *Cache) Evict(ctx context.Context, need uint64) (freed uint64, err error) {
	if !c.Enabled() {
		return 0, ErrDisabled
	}
	unlock, err := c.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	return c.evictLocked(ctx, need)
}

func (c *Cache) evictLocked(ctx context.Context, need uint64) (uint64, error) {
	ix, err := c.loadIndex()
	if err != nil {
		return 0, err
	}
	pins, err := c.pins()
	if err != nil {
		return 0, err
	}
	pinned := map[string]bool{}
	for _, p := range pins {
		for _, d := range p.Objects {
			pinned[d] = true
		}
	}
	var cands []string
	for d := range ix.Objects {
		if !pinned[d] {
			cands = append(cands, d)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := ix.Objects[cands[i]], ix.Objects[cands[j]]
		if a.LastUsed != b.LastUsed {
			return a.LastUsed < b.LastUsed
		}
		return cands[i] < cands[j]
	})
	var freed uint64
	var errs []error
	for _, d := range cands {
		if freed >= need || ctx.Err() != nil {
			break
		}
		if err := os.Remove(c.objectPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("evict %s: %w", d, err))
			continue
		}
		freed += ix.Objects[d].Size
		c.log.Debug("object evicted", "digest", d, "size", ix.Objects[d].Size)
		delete(ix.Objects, d)
	}
	if err := c.saveIndex(ix); err != nil {
		errs = append(errs, err)
	}
	return freed, errors.Join(errs...)
}

// Stats describes the cache.
type Stats struct {
	Enabled     bool   `json:"enabled"`
	Objects     int    `json:"objects"`
	Bytes       uint64 `json:"bytes"`    // stored
	Capacity    uint64 `json:"capacity"` // configured size
	Hits        uint64 `json:"hits"`     // container mounts served, summed over objects
	Pinned      int    `json:"pinned"`   // objects used by mounted containers
	PinnedBytes uint64 `json:"pinned_bytes"`
	// SavedBytes is what the mounted containers would hold on top in the
	// page cache and read from disk without sharing: Σ size × (users − 1).
	SavedBytes uint64           `json:"saved_bytes"`
	Containers []ContainerStats `json:"containers"`
}

// ContainerStats describes one mounted container's use of the cache.
type ContainerStats struct {
	ID      string `json:"id"`
	Objects int    `json:"objects"` // its files served from the cache
	Bytes   uint64 `json:"bytes"`
	// SavedBytes is its share of the node's saving: Σ size × (users − 1) / users.
	SavedBytes uint64 `json:"saved_bytes"`
}

// Stats reports what the store holds and who uses it.
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Enabled: c.Enabled(), Capacity: c.cfg.CacheSize}
	if !c.Enabled() {
		return st, nil
	}
	unlock, err := c.lock()
	if err != nil {
		return st, err
	}
	defer unlock()
	ix, err := c.loadIndex()
	if err != nil {
		return st, err
	}
	pins, err := c.pins()
	if err != nil {
		return st, err
	}
	st.Objects = len(ix.Objects)
	st.Bytes = ix.usedBytes()
	for _, o := range ix.Objects {
		st.Hits += o.Hits
	}
	users := map[string]uint64{}
	for _, p := range pins {
		for _, d := range p.Objects {
			users[d]++
		}
	}
	for d, n := range users {
		o := ix.Objects[d]
		if o == nil {
			continue
		}
		st.Pinned++
		st.PinnedBytes += o.Size
		st.SavedBytes += o.Size * (n - 1)
	}
	for _, p := range pins {
		cs := ContainerStats{ID: p.ID}
		for _, d := range p.Objects {
			o := ix.Objects[d]
			if o == nil {
				continue
			}
			cs.Objects++
			cs.Bytes += o.Size
			cs.SavedBytes += o.Size * (users[d] - 1) / users[d]
		}
		st.Containers = append(st.Containers, cs)
	}
	return st, nil
}
