package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }

const uuidA = "2c0b3e7a-5d51-4c8e-a1f4-3b9d6e2a7c10"

func TestLoadFSIgnoresArtefacts(t *testing.T) {
	fsys := fstest.MapFS{
		"101.conf":             file("ONBOOT=yes\n"),
		uuidA + ".conf":        file("NAME=mail\n"),
		"web.hcl":              file("container \"web\" {\n}\n"),
		"ve-basic.conf-sample": file("X=1\n"),
		"0.conf":               file("ONBOOT=no\n"),
		"vps.mount":            file("#!/bin/sh\n"),
		"101.mount":            file("#!/bin/sh\n"),
		".101.conf.swp":        file("x"),
		"101.conf~":            file("x"),
		"#101.conf#":           file("x"),
		".#101.conf":           file("x"),
		"4913":                 file(""),
		"101.conf.dpkg-old":    file("x"),
		"101.conf.rpmnew":      file("x"),
		"101.conf.rpmsave":     file("x"),
		"web.hcl.tmp":          file("x"),
		"README":               file("x"),
		"ct.conf":              file("x"),
	}
	set, err := LoadFS(fsys, Paths{ConfigDir: "/etc/vz/conf"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set.Diags.HasErrors() {
		t.Fatal(set.Diags.Err())
	}
	for _, id := range []string{"101", uuidA, "web"} {
		if set.Containers[id] == nil {
			t.Errorf("container %s missing", id)
		}
	}
	if len(set.Containers) != 3 {
		t.Errorf("%d containers, want 3", len(set.Containers))
	}
	for p, f := range set.Files {
		isCT := strings.HasSuffix(p, "/101.conf") || strings.HasSuffix(p, uuidA+".conf") || strings.HasSuffix(p, "/web.hcl")
		if isCT == (f.Ignored != "") {
			t.Errorf("%s: ignored %q", p, f.Ignored)
		}
	}
	c := set.Containers["101"]
	if c.Source.File != "/etc/vz/conf/101.conf" {
		t.Errorf("Source.File = %q", c.Source.File)
	}
	if set.Containers[uuidA].UUID != uuidA {
		t.Errorf("UUID not taken from the file name")
	}
}

// Two files claiming the same thing both fail; neither wins.
func TestLoadFSConflicts(t *testing.T) {
	tests := []struct {
		name  string
		files fstest.MapFS
		msg   string
	}{
		{"same id", fstest.MapFS{"101.conf": file("ONBOOT=yes\n"), "a.hcl": file("container \"101\" {\n}\n")}, "container ID or name 101 is also claimed"},
		{"same uuid", fstest.MapFS{"101.conf": file("UUID=" + uuidA + "\n"), "a.hcl": file("container \"a\" {\n  uuid = \"" + uuidA + "\"\n}\n")}, "uuid " + uuidA},
		{"same address", fstest.MapFS{"101.conf": file("IP_ADDRESS=192.0.2.7\n"), "a.hcl": file("container \"a\" {\n  network {\n    interface \"eth0\" { ip = [\"192.0.2.7/24\"] }\n  }\n}\n")}, "address 192.0.2.7 is also claimed"},
		{"same private", fstest.MapFS{"101.conf": file("VE_PRIVATE=/vz/private/shared\n"), "102.conf": file("VE_PRIVATE=/vz/private/shared\n")}, "private area /vz/private/shared"},
		{"name vs id", fstest.MapFS{"101.conf": file("NAME=web\n"), "web.hcl": file("container \"web\" {\n}\n")}, "container ID or name web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := LoadFS(tt.files, Paths{ConfigDir: "/c"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Containers) != 0 {
				t.Errorf("a conflicting container was applied: %v", set.Containers)
			}
			hits := map[string]bool{}
			for _, d := range set.Diags {
				if strings.Contains(d.Message, tt.msg) {
					hits[d.Pos.File] = true
					if d.Pos.Line == 0 {
						t.Errorf("no line: %v", d)
					}
				}
			}
			if len(hits) != 2 {
				t.Errorf("want the conflict reported against both files, got %v in %v", hits, set.Diags)
			}
			failed := set.FailedIDs()
			for p, f := range set.Files {
				if !f.Failed {
					t.Errorf("%s not failed", p)
				}
				if len(f.IDs) == 0 {
					t.Errorf("%s: no IDs", p)
				}
			}
			if len(failed) == 0 {
				t.Errorf("no failed IDs")
			}
		})
	}
}

// A file that does not parse still names the IDs it declares, so the
// agent keeps their last good spec instead of pruning them.
func TestLoadFSFailedFilesKeepIDs(t *testing.T) {
	fsys := fstest.MapFS{
		"101.conf":  file("NAME=\"unterminated\n"),
		"web.hcl":   file("container \"web\" {\n  state = \n}\ncontainer \"db\" {\n}\n"),
		"valid.hcl": file("container \"ok\" {\n  memory { ram = true }\n}\n"),
		"bad.hcl":   file("{{{{"),
	}
	set, err := LoadFS(fsys, Paths{ConfigDir: "/c"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"/c/101.conf": {"101"}, "/c/web.hcl": {"web", "db"}, "/c/valid.hcl": {"ok"}, "/c/bad.hcl": {"bad"}}
	for p, ids := range want {
		f := set.Files[p]
		if f == nil || !f.Failed || strings.Join(f.IDs, ",") != strings.Join(ids, ",") {
			t.Errorf("%s: %+v, want failed with IDs %v", p, f, ids)
		}
	}
	if len(set.Containers) != 0 {
		t.Errorf("containers %v", set.Containers)
	}
}

func TestLoadMissingDirIsAnError(t *testing.T) {
	_, err := Load(Paths{Prefix: "/", ConfigDir: filepath.Join(t.TempDir(), "nope"), GlobalConfig: "/nonexistent/vz.conf"})
	if err == nil {
		t.Fatal("no error for a missing config dir")
	}
}

func TestLoadRealDir(t *testing.T) {
	root := t.TempDir()
	p := Paths{Prefix: root, ConfigDir: filepath.Join(root, "etc/vz/conf"), GlobalConfig: filepath.Join(root, "etc/vz/vz.conf")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(p.ConfigDir, 0o755))
	must(os.MkdirAll(filepath.Join(p.PrivateBase(), "102"), 0o755))
	must(os.WriteFile(p.GlobalConfig, []byte("VE_ROOT=/vz/root/$VEID\nVE_PRIVATE=/vz/private/$VEID\nPHYSPAGES=0:256M\n"), 0o644))
	write := func(name, data string, mode os.FileMode) {
		path := filepath.Join(p.ConfigDir, name)
		must(os.WriteFile(path, []byte(data), mode))
		must(os.Chmod(path, mode))
	}
	write("101.conf", "ONBOOT=yes\n", 0o644)
	write("103.conf", "ONBOOT=yes\n", 0o664)              // group-writable
	write("web.hcl", "container \"web01\" {\n}\n", 0o646) // other-writable
	// The legacy layout: conf/<ID>.conf -> $VE_PRIVATE/ve.conf.
	must(os.WriteFile(filepath.Join(p.PrivateBase(), "102", "ve.conf"), []byte("HOSTNAME=ct102\n"), 0o644))
	must(os.Symlink(filepath.Join(p.PrivateBase(), "102", "ve.conf"), filepath.Join(p.ConfigDir, "102.conf")))
	// A symlink escaping the private areas.
	outside := filepath.Join(root, "outside.conf")
	must(os.WriteFile(outside, []byte("ONBOOT=yes\n"), 0o644))
	must(os.Symlink(outside, filepath.Join(p.ConfigDir, "104.conf")))
	must(os.Symlink("../../../outside.conf", filepath.Join(p.ConfigDir, "105.conf")))
	must(os.Mkdir(filepath.Join(p.ConfigDir, "106.conf"), 0o755))
	if os.Geteuid() == 0 {
		write("107.conf", "ONBOOT=yes\n", 0o644)
		must(os.Chown(filepath.Join(p.ConfigDir, "107.conf"), 65534, 65534))
	}

	set, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c := set.Containers["101"]; c == nil || c.Memory.RAM != 256<<20 || c.Root != filepath.Join(root, "vz/root/101") {
		t.Errorf("101 = %+v, want ram from vz.conf and root under the prefix", c)
	}
	if c := set.Containers["102"]; c == nil || c.Hostname != "ct102" || c.Source.File != filepath.Join(p.ConfigDir, "102.conf") {
		t.Errorf("102 (symlink into private) = %+v", c)
	}
	refused := map[string]string{"103.conf": "writable by group or others", "web.hcl": "writable by group or others",
		"104.conf": "outside", "105.conf": "outside", "106.conf": "not a regular file"}
	if os.Geteuid() == 0 {
		refused["107.conf"] = "owned by uid 65534, not root"
	}
	for name, why := range refused {
		path := filepath.Join(p.ConfigDir, name)
		f := set.Files[path]
		if f == nil || !f.Failed {
			t.Errorf("%s: %+v, want refused", name, f)
			continue
		}
		found := false
		for _, d := range set.Diags {
			if d.Pos.File == path && strings.Contains(d.Message, why) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no diagnostic containing %q in %v", name, why, set.Diags)
		}
		if set.Containers[strings.TrimSuffix(strings.TrimSuffix(name, ".conf"), ".hcl")] != nil {
			t.Errorf("%s applied", name)
		}
	}
	if !set.FailedIDs()["103"] || !set.FailedIDs()["web01"] {
		t.Errorf("FailedIDs = %v", set.FailedIDs())
	}
}

func TestLoadGlobalHCLDefaults(t *testing.T) {
	g, diags := ParseGlobalHCL("g.hcl", []byte(`
defaults {
  onboot = true
  memory { ram = "1G" }
  network { nameservers = ["192.0.2.53"] }
}
dedup {
  enabled = false
  min_containers = 3
}
`))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if g.Dedup.Enabled || g.Dedup.MinContainers != 3 || g.Dedup.Schedule != "@every 1h" {
		t.Errorf("dedup = %+v", g.Dedup)
	}
	c := parseOne(t, "a.hcl", "container \"a\" {\n  memory { ram = \"2G\" }\n}\n", g)
	if !c.OnBoot || c.Memory.RAM != 2<<30 || len(c.Network.Nameservers) != 1 {
		t.Errorf("defaults not applied under the file's own values: %+v", c)
	}
}

func TestConflicts(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{
		"101.conf": file("IP_ADDRESS=192.0.2.1\nNAME=web\n"),
		"db.hcl":   file("container \"db\" {\n  uuid = \"" + uuidA + "\"\n}\n"),
	}, Paths{ConfigDir: "/c"}, nil, nil)
	if err != nil || len(set.Containers) != 2 {
		t.Fatalf("%v %v", err, set.Diags)
	}
	cand := parseOne(t, "new.hcl", "container \"x\" {\n  name = \"web\"\n  uuid = \""+uuidA+"\"\n  network {\n    interface \"eth0\" { ip = [\"192.0.2.1/32\"] }\n  }\n}\n", nil)
	diags := Conflicts([]*Container{cand}, set.Containers)
	want := []string{
		"new.hcl:2:3: error: container ID or name web is already claimed by container 101 at /c/101.conf:2:1",
		"new.hcl:3:3: error: uuid " + uuidA + " is already claimed by container db at /c/db.hcl:2:3",
		"new.hcl:5:24: error: address 192.0.2.1 is already claimed by container 101 at /c/101.conf:1:1",
	}
	if len(diags) != len(want) {
		t.Fatalf("got %v", diags)
	}
	for i := range want {
		if diags[i].String() != want[i] {
			t.Errorf("got  %s\nwant %s", diags[i], want[i])
		}
	}
	// The same ID replaces, it does not conflict.
	again := parseOne(t, "101.conf", "IP_ADDRESS=192.0.2.1\nNAME=web\n", nil)
	if ds := Conflicts([]*Container{again}, set.Containers); len(ds) != 0 {
		t.Errorf("replacement reported: %v", ds)
	}
}

func TestLoadSkipsGlobalInConfigDir(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"global.hcl": file("defaults {\n  onboot = true\n}\n")},
		Paths{ConfigDir: "/c", GlobalConfig: "/c/global.hcl"}, nil, nil)
	if err != nil || set.Diags.HasErrors() || set.Files["/c/global.hcl"].Ignored == "" {
		t.Errorf("%v %v %+v", err, set.Diags, set.Files)
	}
}

func TestDedupConfigChecked(t *testing.T) {
	_, diags := ParseGlobalLegacy("vz.conf", []byte("PFCACHE_SCHEDULE=\"every hour\"\nPFCACHE_MINSIZE=1M\nPFCACHE_MAXSIZE=4K\nPFCACHE_DIRS=\"usr ../etc\"\n"))
	want := []string{"vz.conf:1:1: error: dedup schedule", "vz.conf:2:1: error: dedup min_size 1M is larger than max_size 4K", "vz.conf:4:1: error: dedup dir \"../etc\""}
	if len(diags) != len(want) {
		t.Fatalf("%v", diags)
	}
	for i := range want {
		if !strings.HasPrefix(diags[i].String(), want[i]) {
			t.Errorf("got %s, want %s…", diags[i], want[i])
		}
	}
	_, diags = ParseGlobalHCL("g.hcl", []byte("dedup {\n  schedule = \"@every 1h\"\n  cache_size = \"1M\"\n}\n"))
	if len(diags) != 1 || !strings.HasPrefix(diags[0].String(), "g.hcl:3:3: error: dedup cache_size 1M") {
		t.Errorf("%v", diags)
	}
}

func TestLoadFSUnsafeLabelsNotInIDs(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{"x.hcl": file("container \"../../etc\" {\n}\ncontainer \"ok\" {\n}\n")}, Paths{ConfigDir: "/c"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := set.Files["/c/x.hcl"]; !f.Failed || strings.Join(f.IDs, ",") != "ok" {
		t.Errorf("%+v", f)
	}
}

func TestLoadFSBrokenFileHoldsItsIDsElsewhere(t *testing.T) {
	set, err := LoadFS(fstest.MapFS{
		"a.hcl": file("container \"web\" {\n  state = \n}\n"),
		"b.hcl": file("container \"web\" {\n}\ncontainer \"db\" {\n}\n"),
	}, Paths{ConfigDir: "/c"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Containers) != 0 || !set.Files["/c/b.hcl"].Failed {
		t.Errorf("containers %v, b.hcl %+v", set.Containers, set.Files["/c/b.hcl"])
	}
	found := false
	for _, d := range set.Diags {
		if d.Pos.File == "/c/b.hcl" && d.Pos.Line == 1 && strings.Contains(d.Message, "also declared in /c/a.hcl, which has errors") {
			found = true
		}
	}
	if !found {
		t.Errorf("%v", set.Diags)
	}
}
