package cgroups

import (
	"errors"
	"path/filepath"
	"testing"
)

// fakeV1 makes a v1 root with only the memory and freezer hierarchies
// and a container "ct" with the memory files given.
func fakeV1(t *testing.T, memFiles map[string]string) (string, Manager) {
	t.Helper()
	root := t.TempDir()
	for _, h := range []string{"memory", "freezer"} {
		mkFiles(t, filepath.Join(root, h), map[string]string{"cgroup.procs": ""})
		mkFiles(t, filepath.Join(root, h, "vzd", "ct"), map[string]string{"cgroup.procs": ""})
	}
	mkFiles(t, filepath.Join(root, "memory", "vzd", "ct"), memFiles)
	m, err := NewV1(root, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return root, m
}

func TestV1SwapAccounting(t *testing.T) {
	ctx := ctxT(t)
	t.Run("not accounted", func(t *testing.T) {
		root, m := fakeV1(t, map[string]string{"memory.limit_in_bytes": "9223372036854771712"})
		err := m.Apply(ctx, "ct", Resources{Memory: 64 << 20, Swap: 64 << 20})
		if !errors.Is(err, ErrSwapNotAccounted) {
			t.Fatalf("Apply = %v, want ErrSwapNotAccounted", err)
		}
		if got := render(t, filepath.Join(root, "memory", "vzd", "ct"), "memory.limit_in_bytes"); got != "memory.limit_in_bytes: 67108864\n" {
			t.Errorf("RAM limit not applied: %s", got)
		}
		// Without a swap limit there is nothing to report.
		if err := m.Apply(ctx, "ct", Resources{Memory: 64 << 20}); err != nil {
			t.Errorf("Apply without swap: %v", err)
		}
	})
	t.Run("accounted", func(t *testing.T) {
		root, m := fakeV1(t, map[string]string{
			"memory.limit_in_bytes":       "9223372036854771712",
			"memory.memsw.limit_in_bytes": "9223372036854771712",
		})
		if err := m.Apply(ctx, "ct", Resources{Memory: 64 << 20, Swap: 32 << 20}); err != nil {
			t.Fatal(err)
		}
		const want = "memory.limit_in_bytes: 67108864\nmemory.memsw.limit_in_bytes: 100663296\n"
		if got := render(t, filepath.Join(root, "memory", "vzd", "ct"), "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"); got != want {
			t.Errorf("got:\n%s\nwant:\n%s", got, want)
		}
		// Hierarchies that are not mounted: a limit for them is an error
		// naming the controller, unlimited is fine.
		if err := m.Apply(ctx, "ct", Resources{Pids: 5}); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("Apply pids without the pids hierarchy = %v", err)
		}
		if d := m.Dirs("ct"); len(d) != 2 {
			t.Errorf("Dirs = %v, want memory and freezer", d)
		}
	})
	t.Run("required hierarchy missing", func(t *testing.T) {
		if _, err := NewV1(t.TempDir(), "", nil); err == nil {
			t.Error("NewV1 on an empty root: no error")
		}
	})
}
