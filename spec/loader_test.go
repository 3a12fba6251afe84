package spec

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"vzd/internal/filecache"
)

// The Loader returns what Load returns, parsing again only what changed.
func TestLoaderMatchesLoad(t *testing.T) {
	root := t.TempDir()
	p := Paths{Prefix: root, ConfigDir: filepath.Join(root, "etc/vz/conf"), GlobalConfig: filepath.Join(root, "etc/vz/vz.conf")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(p.ConfigDir, 0o755))
	write := func(name, data string) {
		t.Helper()
		must(os.WriteFile(filepath.Join(p.ConfigDir, name), []byte(data), 0o644))
	}
	must(os.WriteFile(p.GlobalConfig, []byte("PHYSPAGES=0:256M\n"), 0o644))
	write("101.conf", "ONBOOT=yes\n")
	write("web.hcl", "container \"web\" {\n  memory { ram = \"1G\" }\n}\n")
	write("bad.hcl", "container \"bad\" {\n  memory { ram = \"lots\" }\n}\n")
	write("dup.hcl", "container \"101\" {\n}\n")

	l := &Loader{Paths: p}
	same := func(step string) *Set {
		t.Helper()
		got, err := l.Load()
		must(err)
		want, err := Load(p)
		must(err)
		if !reflect.DeepEqual(got.Diags, want.Diags) || !reflect.DeepEqual(got.Files, want.Files) {
			t.Fatalf("%s: Loader diags/files\n%v\n%v\nLoad\n%v\n%v", step, got.Diags, got.Files, want.Diags, want.Files)
		}
		if len(got.Containers) != len(want.Containers) {
			t.Fatalf("%s: Loader has %d containers, Load %d", step, len(got.Containers), len(want.Containers))
		}
		for id, c := range want.Containers {
			if g := got.Containers[id]; g == nil || g.Hash() != c.Hash() || g.Source != c.Source {
				t.Fatalf("%s: container %s differs: %+v vs %+v", step, id, g, c)
			}
		}
		return got
	}
	s1 := same("first load")
	if s1.Containers["web"] == nil || s1.Containers["101"] != nil || len(s1.Diags) == 0 {
		t.Fatalf("first load: %v %v", s1.Containers, s1.Diags)
	}
	s2 := same("unchanged")
	if s2.Containers["web"] != s1.Containers["web"] {
		t.Error("an unchanged file was parsed again")
	}

	must(os.Remove(filepath.Join(p.ConfigDir, "dup.hcl")))
	write("web.hcl", "container \"web\" {\n  memory { ram = \"2G\" }\n}\n")
	s3 := same("one file changed, one removed")
	if s3.Containers["web"] == s2.Containers["web"] || s3.Containers["web"].Memory.RAM != 2<<30 {
		t.Errorf("changed file not parsed again: %+v", s3.Containers["web"])
	}
	if s3.Containers["101"] == nil || s3.Containers["101"].Memory.RAM != 256<<20 {
		t.Errorf("101 after its conflict went: %+v", s3.Containers["101"])
	}

	must(os.WriteFile(p.GlobalConfig, []byte("PHYSPAGES=0:512M\n"), 0o644))
	s4 := same("global changed")
	if s4.Containers["101"].Memory.RAM != 512<<20 {
		t.Errorf("global change not applied: %+v", s4.Containers["101"].Memory)
	}
	must(os.Remove(p.GlobalConfig))
	s5 := same("global removed")
	if s5.Containers["101"].Memory.RAM == 512<<20 {
		t.Error("removed global still applied")
	}
}

// A settled file is not read again, yet every change shows: a rewrite in
// place with the same size, a chmod that makes it refused, a removal.
func TestLoaderReadsOnlyChangedFiles(t *testing.T) {
	t.Cleanup(filecache.SetRacyWindowForTest(10 * time.Millisecond))
	root := t.TempDir()
	p := Paths{Prefix: root, ConfigDir: filepath.Join(root, "etc/vz/conf"), GlobalConfig: filepath.Join(root, "etc/vz/vz.conf")}
	if err := os.MkdirAll(p.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	web := filepath.Join(p.ConfigDir, "web.hcl")
	if err := os.WriteFile(web, []byte("container \"web\" {\n  memory { ram = \"1G\" }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	l := &Loader{Paths: p}
	load := func() *Set {
		t.Helper()
		s, err := l.Load()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := load(); s.Containers["web"] == nil || s.Containers["web"].Memory.RAM != 1<<30 {
		t.Fatalf("first load: %+v", s.Containers)
	}
	if _, ok := l.reads.files["web.hcl"]; !ok {
		t.Fatal("a settled file was not remembered")
	}
	load()

	// Same size, new bytes, in place.
	if err := os.WriteFile(web, []byte("container \"web\" {\n  memory { ram = \"2G\" }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := load(); s.Containers["web"] == nil || s.Containers["web"].Memory.RAM != 2<<30 {
		t.Fatalf("in-place rewrite not seen: %+v", s.Containers["web"])
	}
	time.Sleep(50 * time.Millisecond)
	load()
	if err := os.Chmod(web, 0o666); err != nil {
		t.Fatal(err)
	}
	if s := load(); s.Containers["web"] != nil || !s.Files[web].Failed {
		t.Fatalf("file made group-writable still applied: %+v", s.Files[web])
	}
	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	if s := load(); len(s.Containers) != 0 || len(l.reads.files) != 0 {
		t.Fatalf("removed file still loaded or remembered: %v %v", s.Containers, l.reads.files)
	}
}
