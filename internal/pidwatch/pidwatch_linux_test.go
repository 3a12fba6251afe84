package pidwatch

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"vzd/internal/procfs"
)

func sleeper(t *testing.T) (*exec.Cmd, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	start, _, err := procfs.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, start
}

func TestExitReported(t *testing.T) {
	got := make(chan string, 4)
	w, err := New(func(key string) { got <- key })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	a, aStart := sleeper(t)
	b, bStart := sleeper(t)
	for _, x := range []struct {
		key   string
		cmd   *exec.Cmd
		start uint64
	}{{"a", a, aStart}, {"b", b, bStart}} {
		if err := w.Watch(x.key, x.cmd.Process.Pid, x.start); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Watch("a", a.Process.Pid, aStart); err != nil || w.Len() != 2 {
		t.Fatalf("watching again: %v, %d watched", err, w.Len())
	}

	_ = b.Process.Kill()
	select {
	case key := <-got:
		if key != "b" {
			t.Fatalf("exit of %q reported, want b", key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exit not reported")
	}
	if w.Len() != 1 {
		t.Fatalf("%d watched after an exit, want 1", w.Len())
	}

	// A start time that is not the process's: that process is gone.
	if err := w.Watch("c", a.Process.Pid, aStart+1); err != nil {
		t.Fatal(err)
	}
	select {
	case key := <-got:
		if key != "c" {
			t.Fatalf("reported %q, want c", key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a reused pid not reported at once")
	}

	w.Forget("a")
	_ = a.Process.Kill()
	select {
	case key := <-got:
		t.Fatalf("forgotten %q reported", key)
	case <-time.After(200 * time.Millisecond):
	}
}
