package templates

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vzd/actuators/cgroups"
	"vzd/actuators/image"
	"vzd/actuators/runtime"
	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// The test binary is also the runtime's supervisor and init stage.
func TestMain(m *testing.M) {
	if runtime.Main() {
		return
	}
	os.Exit(m.Run())
}

// debianCache is shared with package templates' Debian tests and
// scripts/bench-templates.sh, so debootstrap runs once.
const debianCache = "/var/tmp/vzd-debian-cache"

const debianName = "debian-12-x86_64"

func requireDebian(t *testing.T) {
	t.Helper()
	if os.Getenv("VZD_TEST_DEBIAN") != "1" {
		t.Skip("set VZD_TEST_DEBIAN=1 to run the Debian template tests (builds debian-12 once, downloads from the mirror)")
	}
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "debootstrap")
	testutil.RequireTool(t, "ip")
	testutil.RequireTool(t, "curl")
	testutil.RequireTool(t, "nsenter")
}

// debianContainer creates and mounts a container image from the Debian
// cache with the images actuator, as the agent does.
func debianContainer(t *testing.T, log *slog.Logger) (*templates.Cache, *spec.Container) {
	t.Helper()
	cache := templates.NewCache(spec.Paths{Prefix: debianCache}, log)
	src, err := cache.Image(t.Context(), debianName, templates.NewProgress(logWriter{t}))
	if err != nil {
		t.Fatal(err)
	}
	node := t.TempDir()
	img, err := image.New(image.Config{Paths: spec.Paths{Prefix: node}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	id := testutil.UniqueName("ct")
	c := &spec.Container{ID: id, Hostname: "deb-" + id, State: spec.StateRunning,
		OSTemplate: debianName, Disk: spec.Disk{Size: 2 << 30},
		StopTimeout: 30 * time.Second, Init: []string{spec.DefaultInit},
		Root: filepath.Join(node, "vz/root", id), Private: filepath.Join(node, "vz/private", id)}
	if err := img.Create(t.Context(), c, src); err != nil {
		t.Fatal(err)
	}
	if err := img.Mount(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := img.Unmount(context.Background(), c); err != nil {
			t.Errorf("unmount %s: %v", c.ID, err)
		}
	})
	return cache, c
}

// netnsClient makes a network namespace for the test's client, with a
// veth pair to the network namespace of pid (the server side), and
// returns the namespace and the server's address.
func netnsClient(t *testing.T, pid int) (ns, server string) {
	t.Helper()
	ns = testutil.UniqueName("vzt")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	a, b := ns+"a", ns+"b"
	if len(a) > 15 {
		a, b = a[len(a)-15:], b[len(b)-15:]
	}
	run("ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b)
	run("ip", "-n", ns, "link", "set", b, "netns", fmt.Sprint(pid))
	run("ip", "-n", ns, "addr", "add", "10.251.77.1/30", "dev", a)
	run("ip", "-n", ns, "link", "set", a, "up")
	run("ip", "-n", ns, "link", "set", "lo", "up")
	p := fmt.Sprint(pid)
	run("nsenter", "-t", p, "-n", "ip", "addr", "add", "10.251.77.2/30", "dev", b)
	run("nsenter", "-t", p, "-n", "ip", "link", "set", b, "up")
	run("nsenter", "-t", p, "-n", "ip", "link", "set", "lo", "up")
	return ns, "10.251.77.2"
}

// fetch gets url from inside ns with curl, retrying for up to a
// minute (bounded; not a timing assertion).
func fetch(t *testing.T, ns, url string) string {
	t.Helper()
	var out []byte
	var err error
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		out, err = exec.Command("ip", "netns", "exec", ns, "curl", "-sSf", "--max-time", "2", url).CombinedOutput()
		if err == nil {
			return string(out)
		}
	}
	t.Fatalf("curl %s from %s: %v: %s", url, ns, err, out)
	return ""
}

func dpkgInstalled(t *testing.T, root string) []string {
	b, err := os.ReadFile(filepath.Join(root, statusPath))
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := templates.InstalledPackages(b)
	return inst
}

// TestDebianNginxStopped installs the nginx template into a stopped
// Debian container (chroot with the container's own dpkg, packages fetched
// from the mirror), serves a page from it to a client in the test's own
// network namespace, and removes the template again.
func TestDebianNginxStopped(t *testing.T) {
	requireDebian(t)
	log := slog.New(slog.NewTextHandler(logWriter{t}, nil))
	cache, c := debianContainer(t, log)
	before := dpkgInstalled(t, c.Root)
	act := New(cache, nil, log)
	c.Templates = []string{"nginx"}
	if err := act.Apply(t.Context(), c, false); err != nil {
		t.Fatal(err)
	}
	rec, err := act.State(t.Context(), c)
	if err != nil || len(rec.Applied) != 1 || !slices.Contains(rec.Applied[0].Packages, "nginx-light") {
		t.Fatalf("record = %+v, %v", rec, err)
	}
	for _, p := range []string{"usr/sbin/nginx", "var/www/html/index.html"} {
		if _, err := os.Stat(filepath.Join(c.Root, p)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(c.Root, "usr/sbin/policy-rc.d")); err == nil {
		t.Error("policy-rc.d left in the container")
	}

	// Serve from the tree: nginx chrooted in its own pid and network
	// namespaces; the client is in the test's namespace across a veth.
	srv := exec.Command("unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc="+filepath.Join(c.Root, "proc"),
		"chroot", c.Root, "/usr/sbin/nginx", "-g", "daemon off;")
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
			srv.Wait()
		}
	}
	t.Cleanup(stop)
	// The server's namespace is that of unshare's child.
	var pid int
	for range 100 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", srv.Process.Pid, srv.Process.Pid)); err == nil && len(b) > 0 {
			fmt.Sscan(string(b), &pid)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatalf("nginx did not start: %s", srvOut.String())
	}
	ns, addr := netnsClient(t, pid)
	if got := fetch(t, ns, "http://"+addr+"/"); got != "vzd nginx template\n" {
		t.Errorf("page = %q", got)
	}
	stop()

	c.Templates = nil
	if err := act.Apply(t.Context(), c, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Root, "usr/sbin/nginx")); err == nil {
		t.Error("nginx still installed after the template left the spec")
	}
	if after := dpkgInstalled(t, c.Root); !slices.Equal(after, before) {
		t.Errorf("packages after removal differ from before: +%v -%v", minus(after, before), minus(before, after))
	}
}

// runtimeExec adapts the runtime's Exec (which takes a tty flag) to Execer.
type runtimeExec struct{ r *runtime.Runtime }

func (x runtimeExec) Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return x.r.Exec(ctx, c, argv, stdin, stdout, stderr, false)
}

// TestDebianBootSystemdAndNginx boots a container made from the Debian
// template with the runtime (systemd as init) until systemd reports the
// system running, installs the nginx template into the running container
// (through the runtime's exec; the package's own scripts start the
// service under systemd), and fetches a page from a client in the test's
// own network namespace.
func TestDebianBootSystemdAndNginx(t *testing.T) {
	requireDebian(t)
	testutil.RequireCgroupV1(t, "memory", "pids", "freezer")
	log := slog.New(slog.NewTextHandler(logWriter{t}, nil))
	cache, c := debianContainer(t, log)
	parent := testutil.UniqueName("vzt")
	cg, err := cgroups.NewV1("", parent, log)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(runtime.Config{Paths: spec.Paths{Prefix: filepath.Dir(filepath.Dir(filepath.Dir(c.Root)))}, Cgroups: cg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Stop(ctx, c); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := cg.Remove(ctx, c.ID); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
		for _, d := range cg.Dirs("x") {
			os.Remove(filepath.Dir(d))
		}
	})
	x := runtimeExec{rt}
	sh := func(script string) (string, int) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		code, err := x.Exec(ctx, c, []string{"/bin/sh", "-c", script}, nil, &out, &out)
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return strings.TrimSpace(out.String()), code
	}
	var state string
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		state, _ = sh("systemctl is-system-running 2>&1")
		if state == "running" || state == "degraded" {
			break
		}
	}
	if state != "running" {
		failed, _ := sh("systemctl --failed --no-legend 2>&1; systemctl list-jobs --no-legend 2>&1 | head")
		b, _ := os.ReadFile(runtime.ConsoleLogPath(c))
		t.Fatalf("systemd state %q, want running; failed units:\n%s\nconsole:\n%.3000s", state, failed, b)
	}
	if pid1, _ := sh("cat /proc/1/comm"); pid1 != "systemd" {
		t.Errorf("pid 1 is %q", pid1)
	}

	act := New(cache, x, log)
	c.Templates = []string{"nginx"}
	if err := act.Apply(t.Context(), c, true); err != nil {
		t.Fatal(err)
	}
	if active, _ := sh("systemctl is-active nginx"); active != "active" {
		t.Errorf("nginx service %q after install", active)
	}
	st, err := rt.Status(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ns, addr := netnsClient(t, st.Pid)
	if got := fetch(t, ns, "http://"+addr+"/"); got != "vzd nginx template\n" {
		t.Errorf("page = %q", got)
	}
	c.Templates = nil
	if err := act.Apply(t.Context(), c, true); err != nil {
		t.Fatal(err)
	}
	if out, code := sh("command -v nginx"); code == 0 {
		t.Errorf("nginx still there after removal: %s", out)
	}
}
