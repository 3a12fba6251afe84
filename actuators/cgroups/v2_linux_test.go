package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"vzd/internal/testutil"
)

// cgroup2Root finds a real cgroup2 mount: the hybrid layout's
// <root>/unified (this machine, no controllers) or a unified root.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	for _, d := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if exists(d, "cgroup.controllers") {
			return d
		}
	}
	t.Skip("no cgroup2 mount")
	return ""
}

// TestV2RealHierarchy drives the v2 driver's process handling (Create,
// AddProc, Procs, Kill through cgroup.kill, Delegate, Remove) on the
// real kernel. On this machine's hybrid layout the cgroup2 mount has no
// controllers, so limits are covered by the fake-tree tests only.
func TestV2RealHierarchy(t *testing.T) {
	root := cgroup2Root(t)
	parent := "vzdtest-" + testutil.UniqueName("v2")
	m, err := NewV2(root, parent, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	t.Cleanup(func() {
		m.Kill(ctx, "ct")
		if err := removeTree(filepath.Join(root, parent)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := m.Create(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctx, "ct"); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	// Unlimited everywhere: accepted even where controllers are missing.
	if err := m.Apply(ctx, "ct", Resources{}); err != nil {
		t.Errorf("Apply: %v", err)
	}
	h := startHelper(t, "", "sleep", "60")
	if err := m.AddProc(ctx, "ct", h.pid()); err != nil {
		t.Fatal(err)
	}
	if pids, err := m.Procs(ctx, "ct"); err != nil || !slices.Equal(pids, []int{h.pid()}) {
		t.Errorf("Procs = %v, %v", pids, err)
	}
	if err := m.Delegate(ctx, "ct", 300000, 300000); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "ct"); err == nil {
		t.Error("Remove with a process inside: no error")
	}
	if err := m.Kill(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if sig, ok := exitSignal(h.wait(t, 10*time.Second)); !ok || sig != syscall.SIGKILL {
		t.Errorf("sleep not killed by SIGKILL")
	}
	if err := m.Remove(ctx, "ct"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Dirs("ct")[""]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup left after Remove: %v", err)
	}
}
