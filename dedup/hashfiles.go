package dedup

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// hashJob is one eligible file of a container: its digest is taken from
// its trusted.vzd.sha1 xattr or computed (hashJobs).
type hashJob struct {
	id    string
	fsDir string
	rel   string
	tree  *tree // the container's base tree, open
	// Set by hashJobs when the file has a digest.
	ok     bool
	digest string
	st     unix.Stat_t // after the xattr was written (identifies the file in its stub)
}

// tree is a container's base tree opened once for the openat2 of each of
// its files.
type tree struct {
	path string
	fd   int
}

func openTree(path string) (*tree, error) {
	fd, err := openRoot(path)
	if err != nil {
		return nil, err
	}
	return &tree{path: path, fd: fd}, nil
}

func (t *tree) close() { unix.Close(t.fd) }

// hashBufSize is the size of each read into a hashing buffer: 256 KiB stays
// in the CPU's cache between the copy from the page cache and the hashing,
// and makes few read calls.
const hashBufSize = 256 << 10

// hashReadHook, when set (by tests), is called after each read of a file
// being hashed with the bytes read from it so far.
var hashReadHook func(j *hashJob, n uint64)

// hashRun is one hashJobs call: the jobs, what is known of their digests so
// far, and the files being copied into the store while they are hashed.
//
// Copying while hashing ("teeing") saves reading and hashing a shared file
// a second time to store it: when a file to hash has the same path and size
// as a file of another container already hashed, whose digest is shared by
// enough containers and not stored yet, its bytes are also written to an
// ingest file as they are read. If the file's digest turns out to be that
// one, the ingest file holds exactly the bytes that were hashed to it (they
// came from the same buffer) and becomes its object; otherwise it is
// dropped. Teeing never evicts: it uses the room the store has at the start.
// The rest is stored by Scan after hashing (most shared first, evicting if
// need be), re-reading and re-hashing what it copies.
type hashRun struct {
	c     *Cache
	ctx   context.Context
	stats *ScanStats
	jobs  []*hashJob
	next  int // jobs[next] is the next to start

	ix      *index                     // the store's index at the start, nil: no teeing
	room    uint64                     // bytes teeing may still use
	byPath  map[string]*hashJob        // rel and size → a job with a digest
	holders map[string]map[string]bool // digest → containers having it (so far)
	teeing  map[string]bool            // digests being copied (or stored) by teeing
	placed  map[string]*object         // objects stored by teeing, to index
}

// hashJobs gives each job its digest: from the xattr when it was taken at
// the file's current size and mtime, else by hashing the file and recording
// the result. With the SHA extensions two files are hashed at once (one
// per lane of blockSHANIx2), else one after the other with crypto/sha1. A
// file that cannot be read, or changes while hashed, gets no digest. A
// file that another container's copy shows to be shared is copied into the
// store as it is hashed (see hashRun).
func (c *Cache) hashJobs(ctx context.Context, jobs []*hashJob, stats *ScanStats) error {
	for i := range c.bufs {
		if c.bufs[i] == nil {
			c.bufs[i] = make([]byte, hashBufSize)
		}
	}
	r := &hashRun{c: c, ctx: ctx, stats: stats, jobs: jobs,
		byPath: map[string]*hashJob{}, holders: map[string]map[string]bool{}, teeing: map[string]bool{},
		placed: map[string]*object{}}
	if c.root != "" && c.cfg.MinContainers > 1 {
		// MinContainers 1 stores every file: nothing to learn from others.
		if unlock, err := c.lock(); err == nil {
			r.ix, err = c.loadIndex()
			unlock()
			if err == nil {
				r.room = c.room(r.ix)
			}
		}
	}
	lanes := [2]lane{{buf: c.bufs[0]}, {buf: c.bufs[1]}}
	var err error
	if !haveSHA1x2 {
		err = r.hashEach(&lanes[0])
	} else {
		err = r.hashPairs(&lanes[0], &lanes[1])
	}
	for i := range lanes {
		lanes[i].drop()
	}
	// One index update for all the objects stored while hashing.
	if len(r.placed) > 0 {
		if err := c.indexObjects(r.placed); err != nil {
			return err
		}
	}
	return err
}

// lane is one stream of hashing: the file it is hashing, the bytes read
// from it but not hashed yet, and the ingest file it is copied into, if any.
type lane struct {
	job  *hashJob
	f    *os.File
	st   *unix.Stat_t
	buf  []byte
	data []byte // read, not yet hashed: a suffix of buf
	n    uint64 // bytes read
	eof  bool
	s    sha1Stream // with blockSHANIx2
	h    hash.Hash  // without

	tee  *os.File // ingest file the bytes read are written to
	want string   // the digest tee is for
}

// drop abandons the lane's file and its ingest file.
func (l *lane) drop() {
	if l.f != nil {
		l.f.Close()
	}
	l.dropTee()
	l.job, l.f = nil, nil
}

func (l *lane) dropTee() {
	if l.tee != nil {
		l.tee.Close()
		os.Remove(l.tee.Name())
		l.tee = nil
	}
}

// fill makes l hold at least need bytes of a file (hashPairs: a whole
// block), or no file when none is left; it finishes the files that end on
// the way.
func (r *hashRun) fill(l *lane, need int) error {
	for {
		if l.job == nil {
			if r.next == len(r.jobs) {
				return nil
			}
			j := r.jobs[r.next]
			r.next++
			if !r.start(l, j) {
				continue
			}
		}
		if len(l.data) >= need {
			return nil
		}
		if !l.eof {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			// Keep the partial block at the start of buf, read behind it.
			k := copy(l.buf, l.data)
			n, err := l.f.Read(l.buf[k:])
			l.data = l.buf[:k+n]
			l.n += uint64(n)
			if hashReadHook != nil {
				hashReadHook(l.job, l.n)
			}
			if errors.Is(err, io.EOF) || (err == nil && n == 0) {
				l.eof = true
			} else if err != nil {
				r.c.log.Debug("file not hashed", "container", l.job.id, "path", l.job.rel, "err", err)
				r.untee(l)
				l.drop()
				continue
			}
			if l.tee != nil {
				if _, err := l.tee.Write(l.data[k:]); err != nil {
					r.c.log.Debug("copy into the store while hashing", "path", l.job.rel, "err", err)
					r.untee(l)
				}
			}
			continue
		}
		var sum []byte
		if l.h != nil {
			l.h.Write(l.data)
			sum = l.h.Sum(nil)
		} else {
			d := l.s.sum(l.data)
			sum = d[:]
		}
		r.finish(l, sum)
	}
}

// start opens j's file in l, or takes its recorded digest if that is still
// valid (then l stays empty and start returns false).
func (r *hashRun) start(l *lane, j *hashJob) bool {
	c := r.c
	f, st, err := openRegularAt(j.tree.fd, j.tree.path, j.rel)
	if err != nil {
		c.log.Debug("file not hashed", "container", j.id, "path", j.rel, "err", err)
		return false
	}
	if !c.eligible(st) {
		f.Close()
		return false
	}
	if v, err := fdXattr(f, xattrDigest); err == nil {
		if d, ok := parseDigest(string(v), st); ok {
			f.Close()
			r.stats.ReusedDigests++
			j.ok, j.digest, j.st = true, d, *st
			r.known(j)
			return false
		}
	}
	l.job, l.f, l.st, l.data, l.n, l.eof = j, f, st, l.buf[:0], 0, false
	if l.h != nil {
		l.h.Reset()
	} else {
		l.s.reset()
	}
	r.tee(l)
	return true
}

// known records that j has its digest.
func (r *hashRun) known(j *hashJob) {
	key := j.rel + "\x00" + strconv.FormatInt(j.st.Size, 10)
	if r.byPath[key] == nil {
		r.byPath[key] = j
	}
	if r.holders[j.digest] == nil {
		r.holders[j.digest] = map[string]bool{}
	}
	r.holders[j.digest][j.id] = true
}

// tee decides whether l's file is copied into the store as it is hashed
// (see hashRun) and if so opens the ingest file.
func (r *hashRun) tee(l *lane) {
	if r.ix == nil {
		return
	}
	j, size := l.job, uint64(l.st.Size)
	prev := r.byPath[j.rel+"\x00"+strconv.FormatInt(l.st.Size, 10)]
	if prev == nil || prev.id == j.id || r.teeing[prev.digest] || size > r.room {
		return
	}
	others := len(r.holders[prev.digest])
	if r.holders[prev.digest][j.id] {
		others--
	}
	if others+1 < r.c.cfg.MinContainers || r.c.objectOK(r.ix, prev.digest, size) {
		return
	}
	tmp, err := r.c.ingestFile()
	if err != nil {
		r.c.log.Debug("copy into the store while hashing", "path", j.rel, "err", err)
		return
	}
	l.tee, l.want = tmp, prev.digest
	r.teeing[prev.digest] = true
	r.room -= size
}

// untee drops l's ingest file, giving back its digest and room.
func (r *hashRun) untee(l *lane) {
	if l.tee == nil {
		return
	}
	l.dropTee()
	delete(r.teeing, l.want)
	r.room += uint64(l.st.Size)
}

// finish records the digest sum of the l.n bytes hashed from l's file
// unless the file changed meanwhile, publishes its ingest file if it holds
// the object of that digest, and empties l.
func (r *hashRun) finish(l *lane, sum []byte) {
	c, j, f, st := r.c, l.job, l.f, l.st
	defer l.drop()
	r.stats.HashedFiles++
	r.stats.HashedBytes += l.n
	err := func() error {
		var after unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &after); err != nil {
			return err
		}
		if after.Size != st.Size || after.Mtim != st.Mtim || l.n != uint64(st.Size) {
			return errChanged
		}
		d := hex.EncodeToString(sum)
		if err := unix.Fsetxattr(int(f.Fd()), xattrDigest, []byte(formatDigest(d, st)), 0); err != nil {
			return fmt.Errorf("record digest of %s: %w", f.Name(), err)
		}
		if err := unix.Fstat(int(f.Fd()), &after); err != nil {
			return err
		}
		j.ok, j.digest, j.st = true, d, after
		r.known(j)
		return nil
	}()
	if err != nil {
		c.log.Debug("file not hashed", "container", j.id, "path", j.rel, "err", err)
	}
	if l.tee == nil {
		return
	}
	if !j.ok || j.digest != l.want {
		r.untee(l)
		return
	}
	// The ingest file holds the l.n bytes just hashed to l.want.
	o, err := c.place(l.tee, l.want, l.n)
	l.tee.Close()
	if err != nil {
		os.Remove(l.tee.Name())
		c.log.Warn("store a file copied while hashed", "container", j.id, "path", j.rel, "err", err)
		delete(r.teeing, l.want) // Scan stores it the usual way
	} else {
		if o != nil {
			r.placed[l.want] = o
		}
		r.stats.Ingested++
		r.stats.IngestedBytes += l.n
	}
	l.tee = nil
}

// hashEach hashes the jobs' files one after the other with crypto/sha1.
func (r *hashRun) hashEach(l *lane) error {
	l.h = sha1.New()
	for {
		if err := r.fill(l, 1); err != nil {
			return err
		}
		if l.job == nil {
			return nil
		}
		l.h.Write(l.data)
		l.data = l.data[len(l.data):]
	}
}

// hashPairs hashes the jobs' files two at a time: each lane takes the next
// file when its own is done, and whole blocks of both lanes go through
// blockSHANIx2 together. Only the last file, once the other lane has run
// out of files, is hashed alone.
func (r *hashRun) hashPairs(a, b *lane) error {
	for {
		if err := r.fill(a, 64); err != nil {
			return err
		}
		if err := r.fill(b, 64); err != nil {
			return err
		}
		switch {
		case a.job != nil && b.job != nil:
			k := min(len(a.data), len(b.data)) &^ 63
			blocks2(&a.s, &b.s, a.data[:k], b.data[:k])
			a.data, b.data = a.data[k:], b.data[k:]
		case a.job != nil:
			k := len(a.data) &^ 63
			blocks1(&a.s, a.data[:k])
			a.data = a.data[k:]
		case b.job != nil:
			k := len(b.data) &^ 63
			blocks1(&b.s, b.data[:k])
			b.data = b.data[k:]
		default:
			return nil
		}
	}
}
