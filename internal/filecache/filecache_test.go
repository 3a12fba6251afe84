package filecache

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCacheDecodesOnlyChangedFiles(t *testing.T) {
	racyWindow = 20 * time.Millisecond
	t.Cleanup(func() { racyWindow = 2 * time.Second })
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.json")
	decodes := 0
	decode := func(p string) (string, error) {
		decodes++
		b, err := os.ReadFile(p)
		return string(b), err
	}
	var c Cache[string]
	get := func(wantV string, wantFound bool, wantDecodes int) {
		t.Helper()
		v, found, err := c.Get(path, decode)
		if err != nil || v != wantV || found != wantFound || decodes != wantDecodes {
			t.Fatalf("Get = %q, %v, %v after %d decodes; want %q, %v, nil after %d", v, found, err, decodes, wantV, wantFound, wantDecodes)
		}
	}
	write := func(s string) { // like renameio: a new inode
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}

	get("", false, 0) // missing: nothing decoded
	write("one")
	get("one", true, 1)
	get("one", true, 2) // too fresh to trust its times
	time.Sleep(3 * racyWindow)
	get("one", true, 3) // settled now: remembered
	get("one", true, 3)
	write("two")
	get("two", true, 4) // renamed over: a new key
	time.Sleep(3 * racyWindow)
	get("two", true, 5)
	if err := os.WriteFile(path, []byte("TWO"), 0o600); err != nil { // in place, same size
		t.Fatal(err)
	}
	get("TWO", true, 6)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	get("", false, 6)

	// Decode errors are returned and not remembered.
	write("bad")
	time.Sleep(3 * racyWindow)
	boom := errors.New("boom")
	if _, _, err := c.Get(path, func(string) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	get("bad", true, 7)
}
