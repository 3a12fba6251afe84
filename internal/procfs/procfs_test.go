package procfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestReadFile(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("0123456789"), 700), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{big, empty, "/proc/self/cgroup", "/proc/self/mountinfo"} {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// mountinfo may change between the reads; the rest may not.
		if !bytes.Equal(got, want) && p != "/proc/self/mountinfo" {
			t.Errorf("%s: got %d bytes, want %d", p, len(got), len(want))
		}
		if len(got) == 0 && len(want) != 0 {
			t.Errorf("%s: read nothing", p)
		}
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: err = %v, want not-exist", err)
	}
	start, zombie, err := StartTime(os.Getpid())
	if err != nil || start == 0 || zombie {
		t.Errorf("StartTime(self) = %d, %v, %v", start, zombie, err)
	}
}
