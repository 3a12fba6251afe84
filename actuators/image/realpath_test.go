package image

import (
	"os"
	"path/filepath"
	"testing"
)

// The snapshot's memo resolves like filepath.EvalSymlinks wherever links
// sit: in a directory on the way, as the last component, relative or
// absolute, and for paths that do not exist yet.
func TestSnapshotRealPath(t *testing.T) {
	top, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(top, "real", "private", "ct1", "root.hdd"), 0o755))
	must(os.WriteFile(filepath.Join(top, "real", "private", "ct1", "root.hdd", "root.hdd"), nil, 0o600))
	must(os.Symlink(filepath.Join(top, "real"), filepath.Join(top, "vz")))                     // absolute link on the way
	must(os.Symlink("ct1", filepath.Join(top, "real", "private", "ct2")))                      // relative link as a directory
	must(os.Symlink("root.hdd/root.hdd", filepath.Join(top, "real", "private", "ct1", "img"))) // link as the last component

	s := &kernelSnapshot{}
	for _, p := range []string{
		filepath.Join(top, "vz", "private", "ct1", "root.hdd", "root.hdd"),
		filepath.Join(top, "vz", "private", "ct2", "root.hdd", "root.hdd"),
		filepath.Join(top, "vz", "private", "ct1", "img"),
		filepath.Join(top, "vz", "private", "ct1", "mnt"), // missing
		filepath.Join(top, "vz", "private", "ct1", "root.hdd", "..", "root.hdd", "root.hdd"),
	} {
		want, err := filepath.EvalSymlinks(p)
		if err != nil {
			want = filepath.Join(top, "real", "private", "ct1", "mnt")
		}
		for range 2 { // computed, then remembered
			if got := s.realPath(p); got != want {
				t.Errorf("realPath(%s) = %s, want %s", p, got, want)
			}
		}
	}
}
