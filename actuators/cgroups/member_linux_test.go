package cgroups

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"vzd/internal/testutil"
)

// TestInCgroup puts a process in a real v1 cgroup and asks both about it
// and about a sibling whose name shares a prefix.
func TestInCgroup(t *testing.T) {
	testutil.RequireCgroupV1(t, "pids")
	base := filepath.Join("/sys/fs/cgroup/pids", testutil.UniqueName("vzdm"))
	dir, sibling := filepath.Join(base, "ct1"), filepath.Join(base, "ct10")
	for _, d := range []string{dir, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.Remove(dir)
		_ = os.Remove(sibling)
		_ = os.Remove(base)
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if in, err := InCgroup(cmd.Process.Pid, "pids", dir); err != nil || !in {
		t.Fatalf("in its own cgroup: %v, %v", in, err)
	}
	if in, err := InCgroup(cmd.Process.Pid, "pids", base); err != nil || !in {
		t.Fatalf("in the parent's subtree: %v, %v", in, err)
	}
	if in, err := InCgroup(cmd.Process.Pid, "pids", sibling); err != nil || in {
		t.Fatalf("in the sibling ct10: %v, %v", in, err)
	}
	if in, err := InCgroup(cmd.Process.Pid, "memory", dir); err != nil || in {
		t.Fatalf("in another hierarchy's cgroup of that path: %v, %v", in, err)
	}
}

func TestHierarchyMatches(t *testing.T) {
	for _, tt := range []struct {
		controllers, key string
		want             bool
	}{
		{"cpu,cpuacct", "cpu", true},
		{"cpu,cpuacct", "cpuacct", true},
		{"pids", "cpu", false},
		{"name=systemd", "name=systemd", true},
		{"", "", true},
		{"pids", "", false},
	} {
		if got := hierarchyMatches(tt.controllers, tt.key); got != tt.want {
			t.Errorf("hierarchyMatches(%q, %q) = %v", tt.controllers, tt.key, got)
		}
	}
}
