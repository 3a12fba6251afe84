package jsonfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTripMissingAndCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "rec.json")
	var v struct{ N int }
	if found, err := Read(path, &v); found || err != nil {
		t.Fatalf("missing file: found=%v err=%v", found, err)
	}
	if err := Write(path, struct{ N int }{7}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	if found, err := Read(path, &v); !found || err != nil || v.N != 7 {
		t.Fatalf("read back: %v %v %+v", found, err, v)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path, &v); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt record: %v", err)
	}
}
