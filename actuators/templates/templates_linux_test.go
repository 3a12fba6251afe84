package templates

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// What these tests cover: the actuator's logic (record, order, undo,
// recovery, removal) against a busybox tree with a dpkg database, using
// packages built with dpkg-deb. Running containers are simulated by
// fakeExec, which runs commands with chroot and dpkg with the host's
// dpkg --root (whose maintainer scripts run chrooted in the tree). The
// stopped path runs the real ChrootRun with the host's dpkg copied into
// the tree. Fetching from the Debian mirror and a real Debian container
// are covered by the VZD_TEST_DEBIAN tests.

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fakeExec runs commands "inside" a container whose tree is c.Root.
type fakeExec struct {
	mu    sync.Mutex
	calls [][]string
}

func (f *fakeExec) Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	f.mu.Lock()
	f.calls = append(f.calls, argv)
	f.mu.Unlock()
	args := argv
	for len(args) > 0 && (args[0] == "env" || strings.Contains(args[0], "=")) {
		args = args[1:]
	}
	var cmd *exec.Cmd
	if filepath.Base(args[0]) == "dpkg" {
		host := []string{"--root=" + c.Root}
		for _, a := range args[1:] {
			if strings.HasPrefix(a, debDir) {
				a = filepath.Join(c.Root, a)
			}
			host = append(host, a)
		}
		cmd = exec.CommandContext(ctx, "dpkg", host...)
	} else {
		cmd = exec.CommandContext(ctx, "chroot", append([]string{c.Root}, args...)...)
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func (f *fakeExec) dpkgCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if slices.Contains(c, "/usr/bin/dpkg") {
			n++
		}
	}
	return n
}

// env is a container with a busybox tree and an empty dpkg database.
type env struct {
	t     *testing.T
	cache *templates.Cache
	exec  *fakeExec
	act   *Actuator
	c     *spec.Container
	debs  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "dpkg-deb")
	testutil.RequireTool(t, "mkfs.ext4")
	log := slog.New(slog.NewTextHandler(logWriter{t}, nil))
	cache := templates.NewCache(spec.Paths{Prefix: t.TempDir()}, log)
	// The tree comes from the busybox template's image, as a container's would.
	img, err := cache.Image(t.Context(), "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	root := mountCopy(t, img)
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
	x := &fakeExec{}
	e := &env{t: t, cache: cache, exec: x, act: New(cache, x, log), debs: t.TempDir(),
		c: &spec.Container{ID: testutil.UniqueName("ct"), Root: root, OSTemplate: "busybox"}}
	return e
}

// deb builds a package; postinst and postrm are shell bodies (empty: none).
func (e *env) deb(name, depends, postinst, postrm string) string {
	e.t.Helper()
	dir := filepath.Join(e.debs, name)
	os.MkdirAll(filepath.Join(dir, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(dir, "usr/share", name), 0o755)
	os.WriteFile(filepath.Join(dir, "usr/share", name, "file"), []byte(name+"\n"), 0o644)
	control := "Package: " + name + "\nVersion: 1.0\nArchitecture: all\nMaintainer: vzd <t@example.invalid>\nDescription: test\n"
	if depends != "" {
		control += "Depends: " + depends + "\n"
	}
	os.WriteFile(filepath.Join(dir, "DEBIAN/control"), []byte(control), 0o644)
	for script, body := range map[string]string{"postinst": postinst, "postrm": postrm} {
		if body != "" {
			os.WriteFile(filepath.Join(dir, "DEBIAN", script), []byte("#!/bin/sh\n"+body+"\n"), 0o755)
		}
	}
	out := filepath.Join(e.debs, name+".deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", dir, out).CombinedOutput(); err != nil {
		e.t.Fatalf("dpkg-deb: %v: %s", err, b)
	}
	return out
}

func (e *env) exists(p string) bool {
	_, err := os.Lstat(filepath.Join(e.c.Root, p))
	return err == nil
}

func (e *env) installed() []string {
	b, _ := os.ReadFile(filepath.Join(e.c.Root, statusPath))
	inst, broken := templates.InstalledPackages(b)
	for p, st := range broken {
		inst = append(inst, p+":"+st)
	}
	slices.Sort(inst)
	return inst
}

func (e *env) record() Record {
	e.t.Helper()
	rec, err := e.act.State(e.t.Context(), e.c)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func TestApplyInstallsAndRemoves(t *testing.T) {
	for _, running := range []bool{true, false} {
		name := "running"
		if !running {
			name = "stopped"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if !running {
				installDpkg(t, e.c.Root)
			}
			e.cache.AddApp(templates.App{Name: "lib", Packages: []string{e.deb("vzd-lib", "", "", "")}})
			e.cache.AddApp(templates.App{Name: "hello",
				Packages:    []string{e.deb("vzd-hello", "vzd-lib", "echo ran > /postinst-ran", ""), e.deb("vzd-lib", "", "", "")},
				PreInstall:  []string{"echo pre > /pre-ran"},
				PostInstall: []string{"test -f /usr/share/vzd-hello/file && echo post > /post-ran"}})
			ctx := t.Context()

			// Nothing in the spec or the record: nothing runs.
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			if len(e.exec.calls) != 0 || e.exists(RecordPath) {
				t.Fatalf("Apply with no templates ran %v", e.exec.calls)
			}

			e.c.Templates = []string{"hello"}
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"/usr/share/vzd-hello/file", "/usr/share/vzd-lib/file", "/postinst-ran", "/pre-ran", "/post-ran"} {
				if !e.exists(f) {
					t.Errorf("%s missing after install", f)
				}
			}
			if e.exists(debDir) || e.exists("/usr/sbin/policy-rc.d") {
				t.Error("copied packages or policy-rc.d left in the container")
			}
			if got := e.installed(); !slices.Equal(got, []string{"vzd-hello", "vzd-lib"}) {
				t.Errorf("installed = %v", got)
			}
			rec := e.record()
			if len(rec.Applied) != 1 || rec.Applied[0].Name != "hello" || !slices.Equal(rec.Applied[0].Packages, []string{"vzd-hello", "vzd-lib"}) || rec.Pending != nil {
				t.Errorf("record = %+v", rec)
			}
			if names, err := e.act.Applied(ctx, e.c); err != nil || !slices.Equal(names, []string{"hello"}) {
				t.Errorf("Applied = %v, %v", names, err)
			}
			// Idempotent: a second Apply installs nothing.
			calls := len(e.exec.calls)
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			if len(e.exec.calls) != calls {
				t.Errorf("second Apply ran %v", e.exec.calls[calls:])
			}

			// A second template whose package the first already installed
			// owns nothing of it.
			e.c.Templates = []string{"hello", "lib"}
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			rec = e.record()
			if len(rec.Applied) != 2 || len(rec.Applied[1].Packages) != 0 {
				t.Errorf("record after lib = %+v", rec.Applied)
			}

			// Removing hello from the spec purges its packages but the one
			// lib names itself.
			e.c.Templates = []string{"lib"}
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			if e.exists("/usr/share/vzd-hello/file") || !e.exists("/usr/share/vzd-lib/file") {
				t.Error("files of the removed template remain, or lib's went")
			}
			if got := e.installed(); !slices.Equal(got, []string{"vzd-lib"}) {
				t.Errorf("installed after removal = %v", got)
			}
			if names, err := e.act.Applied(ctx, e.c); err != nil || !slices.Equal(names, []string{"lib"}) {
				t.Errorf("Applied = %v, %v", names, err)
			}
			// vzd-lib passed to lib with hello's removal and goes with it.
			e.c.Templates = nil
			if err := e.act.Apply(ctx, e.c, running); err != nil {
				t.Fatal(err)
			}
			if names, err := e.act.Applied(ctx, e.c); err != nil || len(names) != 0 {
				t.Errorf("Applied = %v, %v", names, err)
			}
			if got := e.installed(); len(got) != 0 {
				t.Errorf("installed after removing all = %v", got)
			}
		})
	}
}

func TestApplyKeepsPackagesStillNeeded(t *testing.T) {
	e := newEnv(t)
	base := e.deb("vzd-base", "", "", "")
	e.cache.AddApp(templates.App{Name: "base", Packages: []string{base}})
	e.cache.AddApp(templates.App{Name: "user", Packages: []string{e.deb("vzd-user", "vzd-base", "", ""), base}})
	// user comes first and installs vzd-base too; base names it itself, so
	// removing user must not purge it.
	e.c.Templates = []string{"user", "base"}
	if err := e.act.Apply(t.Context(), e.c, true); err != nil {
		t.Fatal(err)
	}
	e.c.Templates = []string{"base"}
	if err := e.act.Apply(t.Context(), e.c, true); err != nil {
		t.Fatal(err)
	}
	if got := e.installed(); !slices.Equal(got, []string{"vzd-base"}) {
		t.Errorf("installed = %v, want vzd-base kept for base", got)
	}

	// The other way round: base goes while user, which depends on it,
	// stays: dpkg refuses, the package is kept and recorded as kept.
	e2 := newEnv(t)
	base = e2.deb("vzd-base", "", "", "")
	e2.cache.AddApp(templates.App{Name: "base", Packages: []string{base}})
	e2.cache.AddApp(templates.App{Name: "user", Packages: []string{e2.deb("vzd-user", "vzd-base", "", "")}})
	e2.c.Templates = []string{"base", "user"}
	if err := e2.act.Apply(t.Context(), e2.c, true); err != nil {
		t.Fatal(err)
	}
	e2.c.Templates = []string{"user"}
	if err := e2.act.Apply(t.Context(), e2.c, true); err != nil {
		t.Fatal(err)
	}
	rec := e2.record()
	if !slices.Equal(e2.installed(), []string{"vzd-base", "vzd-user"}) || !slices.Equal(rec.Kept, []string{"vzd-base"}) {
		t.Errorf("installed %v, kept %v", e2.installed(), rec.Kept)
	}
	// When user goes, the kept package goes with it.
	e2.c.Templates = nil
	if err := e2.act.Apply(t.Context(), e2.c, true); err != nil {
		t.Fatal(err)
	}
	if got := e2.installed(); len(got) != 0 || len(e2.record().Kept) != 0 {
		t.Errorf("after removing all: installed %v, record %+v", got, e2.record())
	}
}

func TestFailedInstallIsUndone(t *testing.T) {
	e := newEnv(t)
	e.cache.AddApp(templates.App{Name: "bad", Packages: []string{
		e.deb("vzd-good", "", "", ""), e.deb("vzd-bad", "vzd-good", "echo failing >&2; exit 1", "")}})
	e.c.Templates = []string{"bad"}
	err := e.act.Apply(t.Context(), e.c, true)
	if err == nil || !strings.Contains(err.Error(), "undone") || !strings.Contains(err.Error(), "step dpkg") {
		t.Fatalf("Apply = %v, want an undone failure at step dpkg", err)
	}
	if got := e.installed(); len(got) != 0 {
		t.Errorf("installed after undo = %v", got)
	}
	if rec := e.record(); rec.Pending != nil || len(rec.Applied) != 0 {
		t.Errorf("record = %+v", rec)
	}
	// A failing post-install script is undone too.
	e.cache.AddApp(templates.App{Name: "bad", Packages: []string{e.deb("vzd-good", "", "", "")}, PostInstall: []string{"exit 3"}})
	err = e.act.Apply(t.Context(), e.c, true)
	if err == nil || !strings.Contains(err.Error(), "step post-install") {
		t.Fatalf("Apply = %v, want failure at post-install", err)
	}
	if got := e.installed(); len(got) != 0 {
		t.Errorf("installed after undo = %v", got)
	}
}

func TestUndoFailureReportsState(t *testing.T) {
	e := newEnv(t)
	// postinst fails and so does postrm: dpkg can neither configure nor purge it.
	e.cache.AddApp(templates.App{Name: "stuck", Packages: []string{e.deb("vzd-stuck", "", "exit 1", "exit 1")}})
	e.c.Templates = []string{"stuck"}
	err := e.act.Apply(t.Context(), e.c, true)
	var ie *InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("Apply = %v, want *InterruptedError", err)
	}
	if ie.Pending.Name != "stuck" || ie.Pending.Op != "install" || ie.Pending.Step != StepDpkg || !slices.Equal(ie.Pending.Packages, []string{"vzd-stuck"}) {
		t.Errorf("pending = %+v", ie.Pending)
	}
	// The record says the same, for the next Apply and for observers.
	names, err := e.act.Applied(t.Context(), e.c)
	if !errors.As(err, &ie) || len(names) != 0 || ie.Pending.Error == "" {
		t.Errorf("Applied = %v, %v", names, err)
	}
	t.Logf("reported: %v", err)
	// Once the package can be purged again (an operator fixed the
	// script), the next Apply finishes the undo and installs nothing.
	os.WriteFile(filepath.Join(e.c.Root, "var/lib/dpkg/info/vzd-stuck.postrm"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	e.c.Templates = nil
	if err := e.act.Apply(t.Context(), e.c, true); err != nil {
		t.Fatal(err)
	}
	if got := e.installed(); len(got) != 0 {
		t.Errorf("installed = %v", got)
	}
	if rec := e.record(); rec.Pending != nil {
		t.Errorf("pending after recovery: %+v", rec.Pending)
	}
}

func TestInterruptedInstallRecovered(t *testing.T) {
	e := newEnv(t)
	deb := e.deb("vzd-half", "", "", "")
	e.cache.AddApp(templates.App{Name: "half", Packages: []string{deb}})
	// The agent died after dpkg unpacked the package: the record says
	// "install at step dpkg", dpkg says "unpacked".
	rec := Record{Pending: &Pending{Name: "half", Op: "install", Step: StepDpkg, Packages: []string{"vzd-half"}}}
	b, _ := json.Marshal(rec)
	os.MkdirAll(filepath.Join(e.c.Root, "var/lib/vzd"), 0o755)
	os.WriteFile(filepath.Join(e.c.Root, RecordPath), b, 0o644)
	if out, err := exec.Command("dpkg", "--root="+e.c.Root, "--unpack", deb).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	_, err := e.act.Applied(t.Context(), e.c)
	var ie *InterruptedError
	if !errors.As(err, &ie) || ie.Pending.Step != StepDpkg {
		t.Fatalf("Applied = %v, want the interruption reported", err)
	}
	// The next Apply undoes it, then installs it cleanly.
	e.c.Templates = []string{"half"}
	if err := e.act.Apply(t.Context(), e.c, true); err != nil {
		t.Fatal(err)
	}
	if got := e.installed(); !slices.Equal(got, []string{"vzd-half"}) {
		t.Errorf("installed = %v", got)
	}
	if names, err := e.act.Applied(t.Context(), e.c); err != nil || !slices.Equal(names, []string{"half"}) {
		t.Errorf("Applied = %v, %v", names, err)
	}
}

func TestCancelledInstallIsUndone(t *testing.T) {
	e := newEnv(t)
	e.cache.AddApp(templates.App{Name: "slow", Packages: []string{e.deb("vzd-slow", "", "", "")},
		PostInstall: []string{"sleep 30"}})
	e.c.Templates = []string{"slow"}
	ctx, cancel := context.WithCancel(t.Context())
	x := &cancelExec{fakeExec: e.exec, cancel: cancel, on: "sleep 30"}
	e.act.exec = x
	err := e.act.Apply(ctx, e.c, true)
	if err == nil || !strings.Contains(err.Error(), "undone") {
		t.Fatalf("Apply = %v, want a cancelled and undone install", err)
	}
	if got := e.installed(); len(got) != 0 {
		t.Errorf("installed = %v", got)
	}
}

// cancelExec cancels the context when a command containing on starts.
type cancelExec struct {
	*fakeExec
	cancel context.CancelFunc
	on     string
}

func (x *cancelExec) Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if strings.Contains(strings.Join(argv, " "), x.on) {
		x.cancel()
	}
	return x.fakeExec.Exec(ctx, c, argv, stdin, stdout, stderr)
}

func TestApplyBadInput(t *testing.T) {
	e := newEnv(t)
	e.c.Templates = []string{"php"}
	err := e.act.Apply(t.Context(), e.c, true)
	if !errors.Is(err, templates.ErrUnknown) || !strings.Contains(err.Error(), "nginx") {
		t.Errorf("unknown template: %v", err)
	}
	// A busybox container has no dpkg.
	os.Remove(filepath.Join(e.c.Root, statusPath))
	e.c.Templates = []string{"nginx"}
	err = e.act.Apply(t.Context(), e.c, true)
	if err == nil || !strings.Contains(err.Error(), "no dpkg") {
		t.Errorf("busybox container: %v", err)
	}
	if e.exists(RecordPath) {
		t.Error("a record was written for nothing")
	}
}

// installDpkg copies the host's dpkg and its libraries into a busybox
// tree, so the stopped path runs a real dpkg inside the chroot.
func installDpkg(t *testing.T, root string) {
	t.Helper()
	bins := []string{"/usr/bin/dpkg", "/usr/bin/dpkg-deb", "/usr/bin/dpkg-query", "/usr/bin/dpkg-split", "/usr/bin/tar"}
	out, err := exec.Command("ldd", bins...).Output()
	if err != nil {
		t.Fatalf("ldd: %v", err)
	}
	files := append([]string{}, bins...)
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/lib") || strings.HasPrefix(f, "/usr/lib") {
			files = append(files, f)
		}
	}
	for _, f := range files {
		dst := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		os.Remove(dst)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(dst, b, 0o755)
	}
	// dpkg insists on finding ldconfig on PATH; busybox has no such applet.
	os.WriteFile(filepath.Join(root, "sbin/ldconfig"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc/dpkg/dpkg.cfg.d"), 0o755)
}

// mountCopy copies a cache image sparse, loop-mounts the copy and returns
// its root/ directory: a container root as the images actuator makes it.
func mountCopy(t *testing.T, img string) string {
	t.Helper()
	dir := t.TempDir()
	cp := filepath.Join(dir, "root.hdd")
	if out, err := exec.Command("cp", "--sparse=always", img, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", cp, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return filepath.Join(mnt, "root")
}
