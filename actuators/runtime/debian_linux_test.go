package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// TestDebianSystemdBoots boots a stock Debian 12 (systemd) unprivileged,
// from a copy of the Debian template image (built by debootstrap once and
// cached under debianCache, shared with the templates tests), and waits for
// `systemctl is-system-running` to say running or degraded.
func TestDebianSystemdBoots(t *testing.T) {
	if os.Getenv("VZD_TEST_DEBIAN") != "1" {
		t.Skip("set VZD_TEST_DEBIAN=1 to boot Debian (builds the template with debootstrap when not cached)")
	}
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "debootstrap")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	in, err := templates.NewCache(spec.Paths{Prefix: debianCache}, nil).Build(ctx, "debian-12-x86_64", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", in.Path, img).CombinedOutput(); err != nil {
		t.Fatalf("copy template: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount image: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })

	c := e.container(false)
	// Replace the busybox tmpfs root with the Debian one.
	c.Root = filepath.Join(mnt, "root")
	c.StopTimeout = 60 * time.Second
	st := e.start(c)
	state, failed := e.waitSystemd(c)
	t.Logf("Debian booted: %s (init %d); failed units: %q", state, st.Pid, failed)
	if got := e.mustSh(c, "cat /proc/1/comm"); got != "systemd" {
		t.Errorf("pid 1 is %q", got)
	}
	if err := e.r.Stop(ctx, c); err != nil {
		t.Fatal(err)
	}
	st, err = e.r.Status(ctx, c)
	if err != nil || st.Running {
		t.Fatalf("after stop: %+v, %v", st, err)
	}
	// systemd halted itself on SIGRTMIN+3: not killed after the timeout.
	if st.ExitCode == 128+9 {
		b, _ := os.ReadFile(ConsoleLogPath(c))
		t.Errorf("systemd did not halt on SIGRTMIN+3; console:\n%s", b)
	}
}

// debianCache is the node prefix where the Debian tests of every package
// keep the template, so debootstrap runs once.
const debianCache = "/var/tmp/vzd-debian-cache"

// waitSystemd waits (up to 3 min) until systemd in c says it is running
// or degraded, fails the test otherwise, and returns the state and the
// failed units.
func (e *env) waitSystemd(c *spec.Container) (state, failed string) {
	e.t.Helper()
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		out, _ := e.sh(c, "systemctl is-system-running 2>&1")
		state = strings.TrimSpace(out)
		if state != "starting" && state != "initializing" && !strings.Contains(state, "Failed to connect") && state != "offline" {
			break
		}
	}
	if state != "running" && state != "degraded" {
		b, _ := os.ReadFile(ConsoleLogPath(c))
		e.t.Fatalf("systemctl is-system-running: %q\nconsole:\n%s", state, b)
	}
	failed, _ = e.sh(c, "systemctl --failed --no-legend --plain")
	return state, failed
}
