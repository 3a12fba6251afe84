package reconciler

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"vzd/spec"
)

// passAndDrain runs one pass and syncs every queued container in this
// goroutine, so a test sees the whole effect of one pass.
func passAndDrain(t *testing.T, r *Reconciler) {
	t.Helper()
	ctx := context.Background()
	r.pass(ctx)
	for r.q.Len() > 0 {
		id, ok := r.q.Get()
		if !ok {
			t.Fatal("queue closed")
		}
		r.handle(ctx, id)
	}
}

func newTest(t *testing.T) (*Reconciler, *fakeNode, *fakeConfig) {
	t.Helper()
	fc := newFakeConfig(t.TempDir())
	node := newFakeNode()
	r := New(Config{Paths: fc.paths, Node: node, Load: fc.load, NoWatch: true, BootID: "boot-1",
		BackoffBase: time.Hour, BackoffMax: time.Hour})
	t.Cleanup(r.q.Close)
	return r, node, fc
}

func wantSteps(t *testing.T, node *fakeNode, want ...string) {
	t.Helper()
	got := node.steps()
	if !slices.Equal(got, want) {
		t.Fatalf("steps:\n got  %q\n want %q", got, want)
	}
}

func TestNewContainerConvergesThenNothingToDo(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	wantSteps(t, node, "web create-image", "web mount", "web limits", "web start", "web network")
	if got, want := r.Status().Containers[0].AppliedHash, fc.cts["web"].Hash(); got != want {
		t.Fatalf("status shows applied hash %q right after the first sync, want %q", got, want)
	}
	before, err := os.Stat(RecordPath(fc.cts["web"].Private))
	if err != nil {
		t.Fatal(err)
	}
	passAndDrain(t, r)
	wantSteps(t, node) // rewriting nothing, observing the same: no work
	if after, err := os.Stat(RecordPath(fc.cts["web"].Private)); err != nil || !os.SameFile(before, after) {
		t.Fatalf("a no-op pass rewrote the record: %v", err)
	}
	select {
	case <-r.Synced():
	default:
		t.Fatal("not synced after the first pass")
	}
	st := r.Status()
	if st.Running != 1 || st.Containers[0].Actual != "running" {
		t.Fatalf("status: %+v", st)
	}
}

func TestRemovedFileStopsAndKeepsData(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	fc.remove("web")
	passAndDrain(t, r)
	wantSteps(t, node, "web stop", "web teardown", "web unmount")
	if !node.cts["web"].image {
		t.Fatal("image destroyed because a file vanished")
	}
	st := r.Status()
	if !st.Containers[0].Orphaned {
		t.Fatalf("not reported orphaned: %+v", st.Containers[0])
	}
	// The file comes back: the container is adopted and started again.
	fc.put("web", nil)
	passAndDrain(t, r)
	wantSteps(t, node, "web mount", "web limits", "web start", "web network")
}

func TestInvalidFileKeepsLastGoodSpec(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	fc.breakFile("web", "memory.ram: not a size")
	passAndDrain(t, r)
	wantSteps(t, node)
	st := r.Status().Containers[0]
	if st.Actual != "running" || !strings.Contains(st.ErrorAt, "web.hcl:3:9") || !strings.Contains(st.LastError, "not a size") {
		t.Fatalf("status: %+v", st)
	}
	// Also across an agent restart: a new reconciler reads the record.
	r2 := New(Config{Paths: fc.paths, Node: node, Load: fc.load, NoWatch: true, BootID: "boot-1"})
	t.Cleanup(r2.q.Close)
	passAndDrain(t, r2)
	wantSteps(t, node)
}

func TestInvalidNewFileDoesNothing(t *testing.T) {
	r, node, fc := newTest(t)
	fc.breakFile("new", "syntax error")
	passAndDrain(t, r)
	wantSteps(t, node)
	if st := r.Status().Containers[0]; st.Desired != "held" {
		t.Fatalf("status: %+v", st)
	}
}

func TestUnreadableDirectoryPrunesNothing(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	fc.err = errors.New("permission denied")
	passAndDrain(t, r)
	wantSteps(t, node)
}

func TestAgentRestartTouchesNoContainer(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("a", nil)
	fc.put("b", func(c *spec.Container) { c.Hostname = "b.example" })
	passAndDrain(t, r)
	node.steps()
	pid := node.cts["a"].pid
	r2 := New(Config{Paths: fc.paths, Node: node, Load: fc.load, NoWatch: true, BootID: "boot-1"})
	t.Cleanup(r2.q.Close)
	passAndDrain(t, r2)
	wantSteps(t, node)
	if node.cts["a"].pid != pid {
		t.Fatal("container restarted")
	}
}

func TestLiveChangeAndPendingRestart(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	pid := node.cts["web"].pid

	fc.put("web", func(c *spec.Container) { c.Memory.RAM = 512 << 20 })
	passAndDrain(t, r)
	wantSteps(t, node, "web limits", "web network")
	if node.cts["web"].ram != 512<<20 || node.cts["web"].pid != pid {
		t.Fatal("RAM not applied live")
	}

	fc.put("web", func(c *spec.Container) { c.Memory.RAM = 512 << 20; c.Privileged = true })
	passAndDrain(t, r)
	wantSteps(t, node, "web limits", "web network")
	st := r.Status().Containers[0]
	if len(st.Pending) != 1 || !strings.Contains(st.Pending[0], "privileged") {
		t.Fatalf("pending: %q", st.Pending)
	}
	if node.cts["web"].pid != pid {
		t.Fatal("restarted without restart_to_apply")
	}

	fc.put("web", func(c *spec.Container) { c.Memory.RAM = 512 << 20; c.Privileged = true; c.RestartToApply = true })
	passAndDrain(t, r)
	wantSteps(t, node, "web stop", "web teardown", "web unmount", "web mount", "web limits", "web start", "web network")
	passAndDrain(t, r)
	wantSteps(t, node)
	if len(r.Status().Containers[0].Pending) != 0 {
		t.Fatal("still pending after restart")
	}
}

func TestDestroyedState(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	fc.put("web", func(c *spec.Container) { c.State = spec.StateDestroyed })
	passAndDrain(t, r)
	wantSteps(t, node, "web stop", "web teardown", "web unmount", "web destroy")
	passAndDrain(t, r)
	wantSteps(t, node)
}

func TestStoppedState(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", func(c *spec.Container) { c.State = spec.StateStopped })
	passAndDrain(t, r)
	wantSteps(t, node, "web create-image")
	fc.put("web", nil)
	passAndDrain(t, r)
	wantSteps(t, node, "web mount", "web limits", "web start", "web network")
	fc.put("web", func(c *spec.Container) { c.State = spec.StateStopped })
	passAndDrain(t, r)
	wantSteps(t, node, "web stop", "web teardown", "web unmount")
}

func TestFailureBacksOffWithoutBlockingOthers(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("bad", nil)
	fc.put("good", nil)
	node.failOn["bad/mount"] = errInjected
	passAndDrain(t, r)
	got := node.steps()
	if !slices.Contains(got, "good start") || !slices.Contains(got, "bad mount FAILED") {
		t.Fatalf("steps: %q", got)
	}
	st := r.Status()
	if st.Failed != 1 || st.Running != 1 {
		t.Fatalf("status counts: %+v", st)
	}
	for _, c := range st.Containers {
		if c.ID == "bad" && !strings.Contains(c.LastError, "injected") {
			t.Fatalf("error not reported: %+v", c)
		}
	}
}

func TestOnbootOffAfterReboot(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", func(c *spec.Container) { c.OnBoot = false })
	passAndDrain(t, r)
	node.steps()
	// The node reboots: nothing runs, mounts are gone.
	node.cts["web"].running, node.cts["web"].mounted = false, false
	r2 := New(Config{Paths: fc.paths, Node: node, Load: fc.load, NoWatch: true, BootID: "boot-2"})
	t.Cleanup(r2.q.Close)
	passAndDrain(t, r2)
	wantSteps(t, node)
	if err := r2.RequestStart("web"); err != nil {
		t.Fatal(err)
	}
	passAndDrain(t, r2)
	wantSteps(t, node, "web mount", "web limits", "web start", "web network")
}

func TestDestroyRequestRefusesDeclared(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	if err := r.Destroy(context.Background(), "web"); err == nil || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("destroy of a declared container: %v", err)
	}
	fc.remove("web")
	passAndDrain(t, r)
	node.steps()
	if err := r.Destroy(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	wantSteps(t, node, "web stop", "web teardown", "web unmount", "web destroy")
}

func TestTruncatedFileTellingNothingKeepsLastGoodSpec(t *testing.T) {
	r, node, fc := newTest(t)
	fc.put("web", nil)
	passAndDrain(t, r)
	node.steps()
	// The file is empty for a moment: it fails and names no container;
	// the record says the container came from it.
	fc.breakFile("web", "file is empty")
	fc.mu.Lock()
	fc.anonymous = true
	fc.mu.Unlock()
	passAndDrain(t, r)
	wantSteps(t, node)
	if st := r.Status().Containers[0]; st.Orphaned || !strings.Contains(st.LastError, "empty") {
		t.Fatalf("status: %+v", st)
	}
}

type fakeExits struct{ watched map[string]int }

func (f *fakeExits) Watch(key string, pid int, _ uint64) error { f.watched[key] = pid; return nil }
func (f *fakeExits) Forget(key string)                         { delete(f.watched, key) }

// A running init is watched; its exit queues its container at once, which
// starts it again without waiting for a pass; a stopped one is not watched.
func TestInitExitResyncsContainer(t *testing.T) {
	r, node, fc := newTest(t)
	exits := &fakeExits{watched: map[string]int{}}
	r.cfg.Exits = exits
	fc.put("web", nil)
	passAndDrain(t, r)
	pid := exits.watched["web"]
	if pid == 0 {
		t.Fatalf("running init not watched: %v", exits.watched)
	}
	node.mu.Lock()
	node.cts["web"].running = false // it crashed
	node.mu.Unlock()
	node.steps()
	r.Exited("web")
	if r.q.Len() != 1 {
		t.Fatalf("queue holds %d after an exit, want the container", r.q.Len())
	}
	id, _ := r.q.Get()
	r.handle(context.Background(), id)
	wantSteps(t, node, "web limits", "web start", "web network")
	if got := exits.watched["web"]; got == 0 || got == pid {
		t.Fatalf("new init not watched: %d (old %d)", got, pid)
	}

	fc.put("web", func(c *spec.Container) { c.State = spec.StateStopped })
	passAndDrain(t, r)
	if _, ok := exits.watched["web"]; ok {
		t.Fatal("stopped container still watched")
	}
}
