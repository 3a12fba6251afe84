// Package filecache remembers what was decoded from small files, keyed by
// each file's identity and times, so that a loop that looks at the same
// few hundred files every few seconds reads and decodes only those that
// changed: a stat instead of open, read, close and a JSON decode.
package filecache

import (
	"errors"
	"io/fs"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Key names one version of a file. A rename over the file (how vzd
// writes every record) gives a new inode; a write in place changes the
// size or the modification time.
type Key struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime unix.Timespec
}

// Stat returns path's key, following symlinks.
func Stat(path string) (Key, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Key{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return Key{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim, Ctime: st.Ctim}, nil
}

// KeyOf returns the key of a file already stat'ed (false when fi does not
// come from the operating system).
func KeyOf(fi fs.FileInfo) (Key, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Key{}, false
	}
	return Key{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: unix.Timespec(st.Mtim), Ctime: unix.Timespec(st.Ctim)}, true
}

// racyWindow: a file changed this recently may change again within the
// same timestamp tick (file systems keep coarse times) without its key
// changing, so it is not trusted; git's index has the same rule.
var racyWindow = 2 * time.Second // a variable for the tests

// Settled reports whether k's file last changed long enough before now
// that a later change must show in its key.
func (k Key) Settled(now time.Time) bool {
	limit := now.Add(-racyWindow).UnixNano()
	return k.Mtime.Nano() < limit && k.Ctime.Nano() < limit
}

// maxEntries bounds a cache: past it, the cache starts again empty (files
// of containers destroyed long ago are never asked for again).
const maxEntries = 8192

// Cache maps paths to what was decoded from them. The zero value is ready.
// Values are handed out as shallow copies: callers must not modify what
// they point to.
type Cache[T any] struct {
	mu sync.Mutex
	m  map[string]entry[T]
}

type entry[T any] struct {
	key Key
	v   T
}

// Get returns the value decoded from path by decode, calling decode only
// when the file changed since the last call, or changed too recently to
// tell. A missing file is (zero, false, nil); decode's errors are
// returned and not remembered.
func (c *Cache[T]) Get(path string, decode func(path string) (T, error)) (T, bool, error) {
	var zero T
	k, err := Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.forget(path)
		return zero, false, nil
	}
	if err != nil {
		return zero, false, err
	}
	c.mu.Lock()
	e, ok := c.m[path]
	c.mu.Unlock()
	if ok && e.key == k {
		return e.v, true, nil
	}
	v, err := decode(path)
	if err != nil {
		c.forget(path)
		return zero, true, err
	}
	if k.Settled(time.Now()) {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxEntries {
			c.m = map[string]entry[T]{}
		}
		c.m[path] = entry[T]{key: k, v: v}
		c.mu.Unlock()
	}
	return v, true, nil
}

// forget drops what is remembered of path.
func (c *Cache[T]) forget(path string) {
	c.mu.Lock()
	delete(c.m, path)
	c.mu.Unlock()
}

// SetRacyWindowForTest sets how recent a change must be for a file not to
// be trusted, for tests of packages that use Key.Settled, and returns the
// function that restores it.
func SetRacyWindowForTest(d time.Duration) (restore func()) {
	old := racyWindow
	racyWindow = d
	return func() { racyWindow = old }
}
