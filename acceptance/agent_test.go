package acceptance

import (
	"fmt"
	"math/rand/v2"
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

func busybox(id, extra string) string {
	return fmt.Sprintf(`container %q {
  ostemplate = "busybox"
  stop_timeout = "5s"
  memory {
    ram = "128M"
  }
  disk {
    size = "128M"
  }
%s
}
`, id, extra)
}

func netIP(ip string) string {
	return fmt.Sprintf("  network {\n    interface \"eth0\" {\n      ip = [%q]\n    }\n  }\n", ip)
}

func cgroupFile(ctrl, id, file string) string {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, "vzd", id, file))
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func pidStart(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // starttime
}

// A limit changed by hand behind the agent's back is put back at the next
// drift check (--drift-interval), without restarting the container.
func TestLimitsEditedByHandRepaired(t *testing.T) {
	n := newNode(t)
	n.agentArgs = []string{"--drift-interval", "1s"}
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", busybox(id, ""))
	c := n.waitRunning(id)
	limit := filepath.Join("/sys/fs/cgroup/memory/vzd", id, "memory.limit_in_bytes")
	if err := os.WriteFile(limit, []byte(strconv.Itoa(256<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	n.waitFor("hand-edited RAM limit repaired", 30*time.Second, func() bool {
		return cgroupFile("memory", id, "memory.limit_in_bytes") == strconv.Itoa(128<<20)
	})
	if c2 := n.waitRunning(id); c2.Pid != c.Pid {
		t.Errorf("container restarted to repair a limit: pid %d -> %d", c.Pid, c2.Pid)
	}
	if !strings.Contains(n.log(), "limits drifted from the spec") {
		t.Error("the repair is not in the agent's log")
	}
}

// An init that dies is seen at once (its pidfd), not at the next resync
// (an hour here): the container runs again.
func TestCrashedInitRestartedAtOnce(t *testing.T) {
	n := newNode(t)
	n.agentArgs = []string{"--resync", "1h"}
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", busybox(id, ""))
	c := n.waitRunning(id)
	if err := syscall.Kill(c.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var c2 reconciler.ContainerStatus
	n.waitFor("a new init", 30*time.Second, func() bool {
		var ok bool
		c2, ok = n.ct(id)
		return ok && c2.Actual == "running" && c2.Pid > 0 && c2.Pid != c.Pid
	})
	if !strings.Contains(n.log(), "container init exited") {
		t.Error("the exit is not in the agent's log")
	}
}

func TestFileToRunningAndLiveEdits(t *testing.T) {
	n := newNode(t)
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", busybox(id, netIP("10.66.0.2/32")))
	c := n.waitRunning(id)
	start := pidStart(c.Pid)

	if out, err := n.vzd("exec", id, "--", "hostname"); err != nil {
		t.Fatalf("exec: %v: %s", err, out)
	}
	if got := cgroupFile("memory", id, "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Fatalf("memory limit %s", got)
	}

	// Live edits: RAM, CPU limit, address. Same init, same start time.
	n.write(id+".hcl", busybox(id, "cpu {\n    limit = \"50%\"\n  }\n"+netIP("10.66.0.3/32")))
	n.write(id+".hcl", strings.Replace(busybox(id, "cpu {\n    limit = \"50%\"\n  }\n"+netIP("10.66.0.3/32")), `ram = "128M"`, `ram = "192M"`, 1))
	n.waitFor("RAM applied live", 30*time.Second, func() bool {
		return cgroupFile("memory", id, "memory.limit_in_bytes") == strconv.Itoa(192<<20)
	})
	n.waitFor("CPU limit applied live", 30*time.Second, func() bool {
		return cgroupFile("cpu", id, "cpu.cfs_quota_us") == "50000"
	})
	n.waitFor("address applied live", 30*time.Second, func() bool {
		out, _ := n.vzd("exec", id, "--", "ip", "-o", "addr", "show", "eth0")
		return strings.Contains(out, "10.66.0.3/32") && !strings.Contains(out, "10.66.0.2/32")
	})
	c2, _ := n.ct(id)
	if c2.Pid != c.Pid || pidStart(c2.Pid) != start {
		t.Fatalf("init restarted by a live edit: pid %d -> %d", c.Pid, c2.Pid)
	}
}

func TestSavesLikeEditorsAndToolsAndInvalidFiles(t *testing.T) {
	n := newNode(t)
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", busybox(id, ""))
	c := n.waitRunning(id)
	path := filepath.Join(n.conf, id+".hcl")

	// Like vim: swap file, 4913 probe, backup, write the new file, remove backup.
	_ = os.WriteFile(filepath.Join(n.conf, "."+id+".hcl.swp"), []byte("garbage\x00"), 0o600)
	_ = os.WriteFile(filepath.Join(n.conf, "4913"), nil, 0o644)
	_ = os.Remove(filepath.Join(n.conf, "4913"))
	_ = os.Rename(path, path+"~")
	if err := os.WriteFile(path, []byte(strings.Replace(busybox(id, ""), `ram = "128M"`, `ram = "160M"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(path + "~")
	_ = os.Remove(filepath.Join(n.conf, "."+id+".hcl.swp"))
	n.waitFor("vim-style save applied", 30*time.Second, func() bool {
		return cgroupFile("memory", id, "memory.limit_in_bytes") == strconv.Itoa(160<<20)
	})
	st := n.status()
	if len(st.Containers) != 1 || len(st.Rejected) != 0 {
		t.Fatalf("an editor artefact was picked up: %+v", st)
	}

	// Truncated in place (an editor's first step): empty, it changes nothing.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	n.waitFor("empty file reported", 30*time.Second, func() bool {
		cs, _ := n.ct(id)
		return strings.Contains(cs.LastError, "empty")
	})
	if cs, _ := n.ct(id); cs.Actual != "running" || cs.Pid != c.Pid || cs.Orphaned {
		t.Fatalf("an empty file changed the container: %+v", cs)
	}
	// Then rewritten in two steps: nothing happens until valid.
	if err := os.WriteFile(path, []byte("container \""+id+"\" {\n  memory { ram = "), 0o644); err != nil {
		t.Fatal(err)
	}
	n.waitFor("half-written file reported", 30*time.Second, func() bool {
		cs, _ := n.ct(id)
		return strings.Contains(cs.ErrorAt, id+".hcl:")
	})
	cs, _ := n.ct(id)
	if cs.Actual != "running" || cs.Pid != c.Pid {
		t.Fatalf("half-written file changed the container: %+v", cs)
	}
	if got := cgroupFile("memory", id, "memory.limit_in_bytes"); got != strconv.Itoa(160<<20) {
		t.Fatalf("limit changed by an invalid file: %s", got)
	}
	n.write(id+".hcl", busybox(id, ""))
	n.waitFor("valid again", 30*time.Second, func() bool {
		cs, _ := n.ct(id)
		return cs.LastError == "" && cgroupFile("memory", id, "memory.limit_in_bytes") == strconv.Itoa(128<<20)
	})

	// An invalid value: the error names file and line, the container runs on.
	n.write(id+".hcl", strings.Replace(busybox(id, ""), `ram = "128M"`, `ram = "lots"`, 1))
	n.waitFor("invalid value reported", 30*time.Second, func() bool {
		cs, _ := n.ct(id)
		return strings.Contains(cs.ErrorAt, id+".hcl:5")
	})
	cs, _ = n.ct(id)
	if cs.Pid != c.Pid {
		t.Fatal("invalid file restarted the container")
	}
}

func TestDeleteKeepsDataDestroyRemovesAll(t *testing.T) {
	n := newNode(t)
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", busybox(id, netIP("10.66.1.2/32")))
	n.waitRunning(id)
	if out, err := n.vzd("exec", id, "--", "sh", "-c", "echo kept > /marker"); err != nil {
		t.Fatalf("exec: %v %s", err, out)
	}
	if err := os.Remove(filepath.Join(n.conf, id+".hcl")); err != nil {
		t.Fatal(err)
	}
	n.waitFor("stopped after delete", 60*time.Second, func() bool {
		cs, ok := n.ct(id)
		return ok && cs.Actual != "running" && cs.Orphaned
	})
	img := filepath.Join(n.root, "vz/private", id, "root.hdd/root.hdd")
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("image gone after the file was deleted: %v", err)
	}
	// Back again: adopted, the marker is still there.
	n.write(id+".hcl", busybox(id, netIP("10.66.1.2/32")))
	n.waitRunning(id)
	if out, err := n.vzd("exec", id, "--", "cat", "/marker"); err != nil || !strings.Contains(out, "kept") {
		t.Fatalf("marker lost: %v %q", err, out)
	}
	// Destroyed: nothing left.
	n.write(id+".hcl", strings.Replace(busybox(id, ""), "ostemplate", "state = \"destroyed\"\n  ostemplate", 1))
	n.waitFor("destroyed", 60*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(n.root, "vz/private", id))
		return os.IsNotExist(err)
	})
	assertNoLeaks(t, n, nil, id)
}

func TestAgentKilledAndRestartedTouchesNoContainer(t *testing.T) {
	n := newNode(t)
	n.start()
	const count = 50
	ids := make([]string, count)
	for i := range ids {
		ids[i] = testutil.UniqueName("ct")
	}
	// All files at once, and the agent SIGKILLed at random moments while
	// it converges them.
	for i, id := range ids {
		n.write(id+".hcl", busybox(id, netIP(fmt.Sprintf("10.67.%d.%d/32", i/200, i%200+2))))
	}
	for range 3 {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		n.kill(syscall.SIGKILL)
		n.start()
	}
	pids := map[string]int{}
	for _, id := range ids {
		pids[id] = n.waitRunning(id).Pid
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := n.vzd("exec", id, "--", "sh", "-c", "echo "+id+" > /marker"); err != nil {
				t.Errorf("exec %s: %v %s", id, err, out)
			}
		}()
	}
	wg.Wait()
	starts := map[string]string{}
	for id, pid := range pids {
		starts[id] = pidStart(pid)
	}
	n.kill(syscall.SIGKILL)
	n.start()
	n.kill(syscall.SIGTERM)
	n.start()
	for _, id := range ids {
		c := n.waitRunning(id)
		if c.Pid != pids[id] || pidStart(c.Pid) != starts[id] {
			t.Errorf("%s restarted by an agent restart: pid %d -> %d", id, pids[id], c.Pid)
		}
		if out, err := n.vzd("exec", id, "--", "cat", "/marker"); err != nil || strings.TrimSpace(out) != id {
			t.Errorf("%s marker: %v %q", id, err, out)
		}
	}
	assertNoLeaks(t, n, ids)
}

// assertNoLeaks checks that what the node holds under its root is exactly
// what its running containers need: one loop device and two mounts (the
// image and the root view) each, a cgroup each, one host link per
// interface; and nothing at all for the containers in gone.
func assertNoLeaks(t *testing.T, n *node, running []string, gone ...string) {
	t.Helper()
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	attached := 0
	for _, l := range loops {
		b, _ := os.ReadFile(l)
		if strings.HasPrefix(string(b), n.root) && !strings.Contains(string(b), "pfcache") {
			attached++
		}
	}
	if attached != len(running) {
		t.Errorf("%d loop devices attached for %d running containers", attached, len(running))
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	mounted := 0
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], n.root) && !strings.Contains(f[1], "pfcache") {
			mounted++
		}
	}
	if mounted != 2*len(running) {
		t.Errorf("%d mounts under the root for %d running containers", mounted, len(running))
	}
	for _, id := range running {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/vzd", id)); err != nil {
			t.Errorf("running %s has no cgroup: %v", id, err)
		}
	}
	for _, id := range gone {
		if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/vzd", id)); len(dirs) > 0 {
			t.Errorf("cgroups of %s left behind: %v", id, dirs)
		}
	}
	out, err := exec.Command("ip", "-n", n.netns, "-o", "link", "show", "type", "veth").Output()
	if err != nil {
		t.Errorf("list links: %v", err)
	}
	if links := strings.Count(string(out), "\n"); links != len(running) {
		t.Errorf("%d host links in the node namespace for %d running containers (one interface each):\n%s", links, len(running), out)
	}
}

func TestUnknownTemplateIsReportedAndChangesNothing(t *testing.T) {
	n := newNode(t)
	n.start()
	id := testutil.UniqueName("ct")
	n.write(id+".hcl", strings.Replace(busybox(id, ""), `"busybox"`, `"no-such-os"`, 1))
	n.waitFor("unknown template reported", 30*time.Second, func() bool {
		cs, ok := n.ct(id)
		return ok && strings.Contains(cs.ErrorAt, id+".hcl:2") && strings.Contains(cs.LastError, "busybox")
	})
	if _, err := os.Stat(filepath.Join(n.root, "vz/private", id)); !os.IsNotExist(err) {
		t.Fatalf("a private area was made for an invalid file: %v", err)
	}
}
