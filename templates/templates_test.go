package templates

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vzd/spec"
)

func TestLookupAcceptsLegacyDot(t *testing.T) {
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, nil)
	for _, name := range []string{"debian-12-x86_64", ".debian-12-x86_64", " busybox", ".busybox", ".debian-12.0-x86_64"} {
		if _, ok := c.Lookup(name); !ok {
			t.Errorf("Lookup(%q) = false", name)
		}
	}
	if _, ok := c.Lookup("centos-7"); ok {
		t.Error("Lookup(centos-7) = true")
	}
	if _, ok := c.AppLookup("nginx"); !ok {
		t.Error("AppLookup(nginx) = false")
	}
	if got := c.Names(); strings.Join(got, ",") != "busybox,debian-12-x86_64" {
		t.Errorf("Names() = %v", got)
	}
	if len(c.AppNames()) < 2 {
		t.Errorf("AppNames() = %v, want at least two", c.AppNames())
	}
}

func TestUnknownTemplateListsKnown(t *testing.T) {
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, nil)
	_, err := c.Image(t.Context(), "centos-7-x86_64", nil)
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("Image(unknown) = %v, want ErrUnknown", err)
	}
	for _, want := range []string{"centos-7-x86_64", "busybox", "debian-12-x86_64"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := c.UnknownAppError("php"); !strings.Contains(err.Error(), "nginx") {
		t.Errorf("UnknownAppError = %q, want the known apps listed", err)
	}
	if err := c.Remove("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Remove(unknown) = %v", err)
	}
}

func TestDefHash(t *testing.T) {
	oses, _ := Builtin()
	a := oses[1]
	b := a
	b.Packages = append(append([]string(nil), a.Packages...), "vim")
	if a.DefHash() == b.DefHash() {
		t.Error("adding a package did not change the definition hash")
	}
	if a.DefHash() != oses[1].DefHash() || len(a.DefHash()) != 12 {
		t.Errorf("DefHash not stable or not 12 hex: %q", a.DefHash())
	}
	c := a
	c.EstimatedSize = 1
	if a.DefHash() != c.DefHash() {
		t.Error("EstimatedSize (progress only) changed the hash")
	}
}

func TestIsHashSuffix(t *testing.T) {
	for s, want := range map[string]bool{
		"0123456789ab.img": true, "0123456789ab.img.tmp": true, "12-x86_64-0123456789ab.img": false,
		"0123456789AB.img": false, "0123.img": false,
	} {
		if got := isHashSuffix(s); got != want {
			t.Errorf("isHashSuffix(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestHostMirror(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "sources.list"), []byte("# nothing\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "vendor.list"),
		[]byte("deb https://packages.example.com/apt cloud-sdk main\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "debian.sources"), []byte(`Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
`), 0o644)
	m, err := HostMirror(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Mirror{URI: "http://mirror.example/debian", Security: "http://mirror.example/debian-security",
		Keyring: "/usr/share/keyrings/debian-archive-keyring.gpg"}
	if m != want {
		t.Errorf("HostMirror = %+v, want %+v", m, want)
	}

	one := t.TempDir()
	os.WriteFile(filepath.Join(one, "sources.list"), []byte(
		"deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian/ bookworm main contrib\n"+
			"deb http://security.example/debian-security bookworm-security main\n"), 0o644)
	m, err = HostMirror(one)
	if err != nil {
		t.Fatal(err)
	}
	if m.URI != "http://ftp.example/debian" || m.Keyring != "/k.gpg" || m.Security != "http://security.example/debian-security" {
		t.Errorf("HostMirror(one-line) = %+v", m)
	}
	if _, err := HostMirror(t.TempDir()); err == nil {
		t.Error("HostMirror(empty) = nil error")
	}
}

func TestImageSizeRoomForInodes(t *testing.T) {
	// busybox: tiny data, ~300 inodes; the image must hold the inodes at
	// 16 KiB each plus a journal.
	if got := imageSize(3<<20, 300); got < 300*16384+4<<20 {
		t.Errorf("imageSize(busybox) = %d, too small", got)
	}
	if got := imageSize(300<<20, 12000); got < 330<<20 || got > 420<<20 {
		t.Errorf("imageSize(debian) = %d MiB, want tight but sufficient", got>>20)
	}
}

func TestLinesProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	l := &Lines{w: &buf, now: func() time.Time { return now }}
	l.Start("build x", 100<<20)
	for i := int64(1); i <= 20; i++ {
		now = now.Add(time.Second)
		l.Update(i * 5 << 20)
	}
	l.Done()
	out := buf.String()
	lines := strings.Count(out, "\n")
	if lines < 5 || lines > 14 {
		t.Errorf("%d lines, want a few:\n%s", lines, out)
	}
	for _, want := range []string{"build x: started, about 100.0 MiB", "MiB/s", "eta", "done, 100.0 MiB in 20s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestBarProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	b := &Bar{w: &buf, now: func() time.Time { return now }}
	b.Start("copy", 10<<20)
	now = now.Add(time.Second)
	b.Update(5 << 20)
	b.Done()
	out := buf.String()
	for _, want := range []string{"\r\x1b[K", "[============            ] 5.0 MiB / 10.0 MiB  5.0 MiB/s  eta 1s", "[========================]"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
}

func TestValidate(t *testing.T) {
	c := NewCache(spec.Paths{Prefix: t.TempDir()}, nil)
	if err := c.Validate(&spec.Container{OSTemplate: ".debian-12-x86_64", Templates: []string{"nginx", "ssh"}}); err != nil {
		t.Errorf("valid container: %v", err)
	}
	if err := c.Validate(&spec.Container{}); err != nil {
		t.Errorf("no templates: %v", err)
	}
	err := c.Validate(&spec.Container{OSTemplate: "centos-7", Templates: []string{"php"}})
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "known OS templates: busybox, debian-12-x86_64") ||
		!strings.Contains(err.Error(), "known application templates: nginx, ssh") {
		t.Errorf("Validate = %v", err)
	}
}

func TestPresizedPath(t *testing.T) {
	if got := PresizedPath("/vz/template/cache/debian-12-x86_64-0123456789ab.img", 10<<30); got != "/vz/template/cache/debian-12-x86_64-0123456789ab.10737418240.img" {
		t.Errorf("PresizedPath = %s", got)
	}
	// The cache's clean-up takes it as part of the entry.
	if !isHashSuffix("0123456789ab.10737418240.img") {
		t.Error("a presized image is not recognised as part of its cache entry")
	}
}
