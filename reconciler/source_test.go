package reconciler

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatcherTriggersOnEverySaveStyle checks that a rename into place, an
// in-place write, a removal and a change in a directory a symlinked config
// points into each trigger a pass.
func TestWatcherTriggersOnEverySaveStyle(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	w, err := newWatcher(slog.New(slog.DiscardHandler), 20*time.Millisecond, dir)
	if err != nil {
		t.Fatal(err)
	}
	w.Watch([]string{dir, other, filepath.Join(dir, "missing")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	triggers := make(chan struct{}, 16)
	go w.Run(ctx, func() { triggers <- struct{}{} })

	expect := func(what string) {
		t.Helper()
		select {
		case <-triggers:
		case <-time.After(10 * time.Second):
			t.Fatalf("no trigger after %s", what)
		}
		// Drain the rest of the burst.
		for {
			select {
			case <-triggers:
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	}
	tmp := filepath.Join(dir, ".a.hcl.tmp")
	if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-triggers:
		t.Fatal("a temp file the loader ignores triggered a pass")
	case <-time.After(300 * time.Millisecond):
	}
	if err := os.Rename(tmp, filepath.Join(dir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	expect("rename into place")
	f, err := os.OpenFile(filepath.Join(dir, "a.hcl"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("y")
	f.Close()
	expect("in-place write")
	if err := os.Remove(filepath.Join(dir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	expect("removal")
	if err := os.WriteFile(filepath.Join(other, "ve.conf"), []byte("z"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("write in a symlink target's directory")
}
