// Package acceptance drives the real vzd binary as root against temporary
// roots: files written into a config directory, containers checked on the
// real kernel (mounts, loop devices, cgroups, links, processes).
package acceptance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vzd/internal/testutil"
	"vzd/reconciler"
)

var vzdBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			// Every test here calls testutil.RequireRoot, which skips or
			// fails (VZD_TEST_PRIVILEGED=1) on its own.
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "vzd-acceptance-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		vzdBin = filepath.Join(dir, "vzd")
		out, err := exec.Command("go", "build", "-o", vzdBin, "vzd/cmd/vzd").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build vzd: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// node is one sandbox node: a root directory, a config directory, a
// network namespace with no route out, and (while started) an agent.
type node struct {
	t     *testing.T
	root  string
	conf  string
	netns string
	agent *exec.Cmd
	out   *syncBuffer
	// agentArgs are extra flags of `vzd agent`.
	agentArgs []string
	done      chan struct{}
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireLoop(t)
	testutil.RequireTool(t, "ip")
	testutil.RequireTool(t, "mkfs.ext4")
	root := t.TempDir()
	n := &node{t: t, root: root, conf: filepath.Join(root, "etc/vz/conf"), netns: testutil.UniqueName("vzdt")}
	if err := os.MkdirAll(n.conf, 0o755); err != nil {
		t.Fatal(err)
	}
	// The temp dir is 0700; config files must not sit in a group-writable tree either.
	_ = os.Chmod(root, 0o755)
	if out, err := exec.Command("ip", "netns", "add", n.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	_ = exec.Command("ip", "-n", n.netns, "link", "set", "lo", "up").Run()
	t.Cleanup(n.cleanup)
	return n
}

func (n *node) flags() []string {
	return []string{"--root", n.root, "--config-dir", n.conf, "--global-config", filepath.Join(n.root, "etc/vz/vz.conf"),
		"--host-netns", "/run/netns/" + n.netns}
}

// start runs the agent in the node's network namespace.
func (n *node) start() {
	n.t.Helper()
	// The node side of every link lives in the node's own network
	// namespace (--host-netns); the agent itself stays in the host's mount
	// namespace, where /sys/fs/cgroup is (ip netns exec would remount /sys).
	args := append(append([]string{"agent", "--resync", "2s"}, n.agentArgs...), n.flags()...)
	cmd := exec.Command(vzdBin, args...)
	if n.out == nil {
		n.out = &syncBuffer{} // one log across agent restarts
	}
	cmd.Stdout, cmd.Stderr = n.out, n.out
	// The agent's own process group, so a SIGKILL hits it and not the
	// container supervisors it started (they have their own sessions).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.agent = cmd
	n.done = make(chan struct{})
	done := n.done
	go func() {
		// Say how every agent ended, in the log a failure prints: an
		// agent that dies on its own must not go unnoticed.
		err := cmd.Wait()
		fmt.Fprintf(n.out, "harness: agent pid %d ended: %v\n", cmd.Process.Pid, err)
		close(done)
	}()
	// A killed agent leaves its socket file behind: wait until the new
	// agent answers on it.
	n.waitFor("agent socket", 30*time.Second, func() bool {
		c, err := net.Dial("unix", filepath.Join(n.root, "run/vzd/vzd.sock"))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill stops the agent with sig and waits for it.
func (n *node) kill(sig syscall.Signal) {
	if n.agent == nil {
		return
	}
	_ = n.agent.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.agent.Process.Kill()
		<-n.done
	}
	n.agent = nil
}

func (n *node) vzd(args ...string) (string, error) {
	// Flags after positional arguments are not parsed: put ours first.
	full := append([]string{args[0]}, append(n.flags(), args[1:]...)...)
	cmd := exec.Command(vzdBin, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (n *node) status() reconciler.Status {
	n.t.Helper()
	out, err := n.vzd("status", "--json")
	if err != nil {
		pid, alive := 0, false
		if n.agent != nil {
			pid, alive = n.agent.Process.Pid, n.agent.Process.Signal(syscall.Signal(0)) == nil
		}
		n.t.Fatalf("vzd status: %v (agent pid %d alive: %v)\n%s", err, pid, alive, out)
	}
	var st reconciler.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		n.t.Fatalf("status json: %v\n%s", err, out)
	}
	return st
}

func (n *node) ct(id string) (reconciler.ContainerStatus, bool) {
	for _, c := range n.status().Containers {
		if c.ID == id {
			return c, true
		}
	}
	return reconciler.ContainerStatus{}, false
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func (n *node) waitFor(what string, timeout time.Duration, cond func() bool) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			n.t.Fatalf("timed out waiting for %s\nagent log:\n%s", what, n.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) waitRunning(id string) reconciler.ContainerStatus {
	n.t.Helper()
	var c reconciler.ContainerStatus
	n.waitFor(id+" running", 90*time.Second, func() bool {
		var ok bool
		c, ok = n.ct(id)
		return ok && c.Actual == "running" && c.Pid > 0 && c.LastError == ""
	})
	return c
}

func (n *node) log() string {
	if n.out == nil {
		return ""
	}
	s := n.out.String()
	if len(s) > 20000 {
		s = "…" + s[len(s)-20000:]
	}
	return s
}

// write puts a config file in place atomically (temp file + rename), as a
// config-management tool does.
func (n *node) write(name, content string) {
	n.t.Helper()
	tmp := filepath.Join(n.conf, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.conf, name)); err != nil {
		n.t.Fatal(err)
	}
}

// cleanup removes everything the node made, even after a failure: the
// containers through the real binary (destroy --all), then whatever is
// left by force.
func (n *node) cleanup() {
	if n.t.Failed() {
		n.t.Logf("agent log:\n%s", n.log())
		// The log above is only its tail; VZD_TEST_LOG_DIR keeps all of it.
		if dir := os.Getenv("VZD_TEST_LOG_DIR"); dir != "" && n.out != nil {
			f := filepath.Join(dir, strings.ReplaceAll(n.t.Name(), "/", "_")+".log")
			if err := os.WriteFile(f, []byte(n.out.String()), 0o644); err == nil {
				n.t.Logf("full agent log in %s", f)
			}
		}
	}
	n.kill(syscall.SIGTERM)
	entries, _ := os.ReadDir(n.conf)
	for _, e := range entries {
		_ = os.Remove(filepath.Join(n.conf, e.Name()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"destroy", "--yes", "--all"}, n.flags()...)
	if out, err := exec.CommandContext(ctx, vzdBin, args...).CombinedOutput(); err != nil {
		n.t.Logf("destroy --all: %v\n%s", err, out)
	}
	// The file cache is the node's, not a container's: destroy leaves it
	// mounted on purpose; a node being torn down unmounts it.
	_ = syscall.Unmount(filepath.Join(n.root, "vz/pfcache/mnt"), 0)
	forceClean(n.t, n.root)
	_ = exec.Command("ip", "netns", "delete", n.netns).Run()
}

// forceClean kills processes, unmounts and detaches whatever still refers
// to root: a safety net so that a failed test leaves the host clean.
func forceClean(t *testing.T, root string) {
	// Containers of this root: their processes are in their cgroups, and
	// their supervisors are named after them (their argv no longer names
	// the root).
	ids, _ := os.ReadDir(filepath.Join(root, "vz/private"))
	for _, id := range ids {
		for _, ctrl := range []string{"pids", "memory", "cpu", "freezer"} {
			b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, "vzd", id.Name(), "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Logf("cleanup: killed leftover container process %d of %s", pid, id.Name())
				}
			}
		}
		_ = exec.Command("pkill", "-9", "-x", "-f", "vzd-supervisor "+id.Name()).Run()
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(root)) {
			var pid int
			fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
			if pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	var mps []string
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], root) {
			mps = append(mps, f[1])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mps[i], syscall.MNT_DETACH); err == nil {
			t.Logf("cleanup: unmounted leftover %s", mps[i])
		}
	}
	for _, id := range ids {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/vzd", id.Name()))
		for _, d := range dirs {
			if os.Remove(d) == nil {
				t.Logf("cleanup: removed leftover cgroup %s", d)
			}
		}
	}
	out, _ := exec.Command("losetup", "-a").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, root) {
			dev := strings.SplitN(line, ":", 2)[0]
			_ = exec.Command("losetup", "-d", dev).Run()
			t.Logf("cleanup: detached leftover %s", dev)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
