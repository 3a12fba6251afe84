package reconciler

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"vzd/spec"
)

// watcher turns file system events in the watched directories into
// triggers. It only says "look again": the loop re-reads every file, so a
// lost or coalesced event costs at most one resync interval.
type watcher struct {
	log       *slog.Logger
	debounce  time.Duration
	configDir string // events on names the loader ignores here are dropped
	fsw       *fsnotify.Watcher

	mu      sync.Mutex
	watched map[string]bool
}

func newWatcher(log *slog.Logger, debounce time.Duration, configDir string) (*watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &watcher{log: log, debounce: debounce, configDir: filepath.Clean(configDir), fsw: fsw, watched: map[string]bool{}}, nil
}

// Watch makes sure dirs are watched (the config directory, the directory
// of the global config, and where symlinked configs point: legacy tools
// rewrite $VE_PRIVATE/ve.conf by rename there) and stops watching the
// others. A directory that does not exist yet is retried on the next call.
func (w *watcher) Watch(dirs []string) {
	want := map[string]bool{}
	for _, d := range dirs {
		want[filepath.Clean(d)] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for d := range w.watched {
		if !want[d] {
			_ = w.fsw.Remove(d)
			delete(w.watched, d)
		}
	}
	for d := range want {
		if w.watched[d] {
			continue
		}
		if err := w.fsw.Add(d); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				w.log.Warn("cannot watch directory", "dir", d, "err", err)
			}
			continue
		}
		w.watched[d] = true
	}
}

// renameDelay is how long a lone Create waits. A file renamed into place
// (how config tools and most editors save) arrives as one Create and is
// complete, so it need not wait the whole debounce; a file being written
// in place also sends Write events, which restart the full debounce.
const renameDelay = 5 * time.Millisecond

// Run calls trigger once per burst of events, debounce after the last
// one (renameDelay after a lone Create), until ctx ends.
func (w *watcher) Run(ctx context.Context, trigger func()) {
	defer w.fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	slow := false // an event of the burst asked for the full debounce
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			// Chmod alone changes no content; a mode change that makes a
			// file unsafe is still seen at the next resync.
			if ev.Op == fsnotify.Chmod {
				continue
			}
			// Temp files, swap files and backups in the config
			// directory are never read: their events must not hold
			// back the rename that puts the real file in place.
			if filepath.Dir(ev.Name) == w.configDir && !spec.IsContainerFile(filepath.Base(ev.Name)) {
				continue
			}
			if ev.Op&fsnotify.Remove != 0 || ev.Op&fsnotify.Rename != 0 {
				// A watched directory that went away must be re-added
				// once it is back.
				w.mu.Lock()
				if w.watched[filepath.Clean(ev.Name)] {
					delete(w.watched, filepath.Clean(ev.Name))
				}
				w.mu.Unlock()
			}
			if ev.Op == fsnotify.Create && !slow {
				timer.Reset(renameDelay)
				continue
			}
			slow = true
			timer.Reset(w.debounce)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			// An overflow means events were lost: look again.
			w.log.Warn("file watch error", "err", err)
			timer.Reset(w.debounce)
		case <-timer.C:
			slow = false
			trigger()
		}
	}
}
