package acceptance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vzd/internal/testutil"
)

// The fleet test drives examples/ansible/site.yml, unchanged, against three
// sandbox nodes on this machine: each its own root, config directory,
// network namespace and agent, reached with ansible_connection=local and
// per-node paths in the inventory.

// fleetCT is one container as the inventory declares it.
type fleetCT struct {
	Name   string            `json:"name"`
	State  string            `json:"state,omitempty"`
	Memory map[string]string `json:"memory,omitempty"`
}

type fleet struct {
	t       *testing.T
	nodes   []*node
	names   []string // inventory host names, one per node
	cts     [][]fleetCT
	destroy [][]string
	dir     string // inventory and Ansible's home
	env     []string
}

func newFleet(t *testing.T, size int) *fleet {
	t.Helper()
	testutil.RequireTool(t, "ansible-playbook")
	f := &fleet{t: t, dir: t.TempDir()}
	for i := range size {
		n := newNode(t)
		n.start()
		f.nodes = append(f.nodes, n)
		f.names = append(f.names, fmt.Sprintf("n%d", i))
		f.cts = append(f.cts, nil)
		f.destroy = append(f.destroy, nil)
	}
	home := filepath.Join(f.dir, "home")
	for _, d := range []string{home, filepath.Join(home, "local"), filepath.Join(home, "remote")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f.env = append(os.Environ(),
		"HOME="+home,
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "local"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(home, "remote"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_HOST_KEY_CHECKING=False",
		"ANSIBLE_RETRY_FILES_ENABLED=False",
		"ANSIBLE_FORKS=10",
	)
	return f
}

// inventory writes the inventory (JSON is YAML) for the current
// declarations and returns its path.
func (f *fleet) inventory() string {
	f.t.Helper()
	hosts := map[string]any{}
	for i, n := range f.nodes {
		cts := f.cts[i]
		if cts == nil {
			cts = []fleetCT{}
		}
		destroy := f.destroy[i]
		if destroy == nil {
			destroy = []string{}
		}
		hosts[f.names[i]] = map[string]any{
			"ansible_connection":         "local",
			"ansible_python_interpreter": "/usr/bin/python3",
			"vzd_bin":                    vzdBin,
			"vzd_root_dir":               n.root,
			"vzd_config_dir":             n.conf,
			"vzd_global_config":          filepath.Join(n.root, "etc/vz/vz.conf"),
			"vzd_host_netns":             "/run/netns/" + n.netns,
			"vzd_containers":             cts,
			"vzd_destroy":                destroy,
		}
	}
	inv := map[string]any{"all": map[string]any{"children": map[string]any{"vzd_nodes": map[string]any{
		"hosts": hosts,
		"vars": map[string]any{
			"vzd_wait_retries": 90,
			"vzd_wait_delay":   1,
			"vzd_container_defaults": map[string]any{
				"ostemplate":   "busybox",
				"stop_timeout": "5s",
				"memory":       map[string]string{"ram": "128M"},
				"disk":         map[string]string{"size": "128M"},
			},
		},
	}}}}
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		f.t.Fatal(err)
	}
	path := filepath.Join(f.dir, "hosts.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// recap is one host's line of the PLAY RECAP.
type recap struct{ ok, changed, unreachable, failed int }

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// play runs the example playbook with extra vars and returns its exit
// status, its output and the recap of each host.
func (f *fleet) play(extra ...string) (int, string, map[string]recap) {
	f.t.Helper()
	args := []string{"-i", f.inventory(), filepath.Join("..", "examples", "ansible", "site.yml")}
	for _, e := range extra {
		args = append(args, "-e", e)
	}
	cmd := exec.Command("ansible-playbook", args...)
	cmd.Env = f.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	f.t.Logf("ansible-playbook %v: %v, took %s", extra, err, time.Since(t0).Round(time.Millisecond))
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("ansible-playbook: %v\n%s", err, out.String())
	}
	rc := map[string]recap{}
	for _, m := range recapLine.FindAllStringSubmatch(out.String(), -1) {
		atoi := func(s string) int { v, _ := strconv.Atoi(s); return v }
		rc[m[1]] = recap{atoi(m[2]), atoi(m[3]), atoi(m[4]), atoi(m[5])}
	}
	return code, out.String(), rc
}

// playOK runs the playbook and fails the test unless every host converged.
func (f *fleet) playOK(extra ...string) map[string]recap {
	f.t.Helper()
	code, out, rc := f.play(extra...)
	if code != 0 || len(rc) != len(f.nodes) {
		f.t.Fatalf("ansible-playbook exit %d, recap %v\n%s", code, rc, out)
	}
	for h, r := range rc {
		if r.failed != 0 || r.unreachable != 0 {
			f.t.Fatalf("%s: %+v\n%s", h, r, out)
		}
	}
	return rc
}

// running returns the IDs the node's agent reports running, and the pid of each.
func running(n *node) map[string]int {
	got := map[string]int{}
	for _, c := range n.status().Containers {
		if c.Actual == "running" {
			got[c.ID] = c.Pid
		}
	}
	return got
}

// checkExactly fails unless node i runs exactly the containers declared
// running for it.
func (f *fleet) checkExactly(i int) map[string]int {
	f.t.Helper()
	var want []string
	for _, c := range f.cts[i] {
		if c.State == "" || c.State == "running" {
			want = append(want, c.Name)
		}
	}
	got := running(f.nodes[i])
	var ids []string
	for id := range got {
		ids = append(ids, id)
	}
	slices.Sort(want)
	slices.Sort(ids)
	if !slices.Equal(want, ids) {
		f.t.Fatalf("node %s runs %v, want %v", f.names[i], ids, want)
	}
	return got
}

// confFiles returns the node's config directory, name to content.
func confFiles(t *testing.T, n *node) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(n.conf)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(n.conf, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

func TestFleetAnsible(t *testing.T) {
	f := newFleet(t, 3)
	prefix := testutil.UniqueName("fl")
	id := func(node int, ct string) string { return fmt.Sprintf("%s-n%d-%s", prefix, node, ct) }
	for i := range f.nodes {
		f.cts[i] = []fleetCT{{Name: id(i, "a")}, {Name: id(i, "b")}}
	}
	f.cts[2][1].State = "stopped" // created, not started

	// First run: every node gets and runs exactly its containers.
	rc := f.playOK()
	pids := make([]map[string]int, len(f.nodes))
	for i, n := range f.nodes {
		if rc[f.names[i]].changed == 0 {
			t.Errorf("%s: first run changed nothing", f.names[i])
		}
		pids[i] = f.checkExactly(i)
		for _, c := range f.cts[i] {
			fi, err := os.Stat(filepath.Join(n.conf, c.Name+".hcl"))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != 0o644 || st.Uid != 0 {
				t.Errorf("%s: mode %v owner %d, want 0644 root", fi.Name(), fi.Mode().Perm(), st.Uid)
			}
		}
	}

	if c, ok := f.nodes[2].ct(id(2, "b")); !ok || c.Actual != "stopped" {
		t.Fatalf("%s declared stopped: %+v (present %v)", id(2, "b"), c, ok)
	}

	// Second run: Ansible changes nothing, and vzd does nothing either:
	// the same init of every container, the same applied spec hash.
	hashes := map[string]string{}
	for _, n := range f.nodes {
		for _, c := range n.status().Containers {
			hashes[c.ID] = c.AppliedHash
		}
	}
	logLen := make([]int, len(f.nodes))
	for i, n := range f.nodes {
		logLen[i] = len(n.log())
	}
	rc = f.playOK()
	for i, n := range f.nodes {
		if r := rc[f.names[i]]; r.changed != 0 {
			t.Errorf("%s: second run changed %d things", f.names[i], r.changed)
		}
		got := f.checkExactly(i)
		for ctID, pid := range pids[i] {
			if got[ctID] != pid {
				t.Errorf("%s restarted by a no-change run: pid %d -> %d", ctID, pid, got[ctID])
			}
		}
		for _, c := range n.status().Containers {
			if c.AppliedHash != hashes[c.ID] {
				t.Errorf("%s: applied hash %s -> %s", c.ID, hashes[c.ID], c.AppliedHash)
			}
		}
		if steps := stepLines(n.log()[logLen[i]:]); len(steps) != 0 {
			t.Errorf("%s: the agent acted on a no-change run:\n%s", f.names[i], strings.Join(steps, "\n"))
		}
	}
	// Ansible rewrote nothing, so the agent saw no event at all. Rewrite
	// every file with the same bytes (a new inode, as any tool's temp file
	// and rename makes): the agent passes over them and the spec hash
	// says there is nothing to do.
	for i, n := range f.nodes {
		logLen[i] = len(n.log())
		rewritten := time.Now()
		for name, content := range confFiles(t, n) {
			n.write(name, content)
		}
		n.waitFor("a sync of every rewritten container", 30*time.Second, func() bool {
			for _, c := range n.status().Containers {
				if !c.Synced.After(rewritten) {
					return false
				}
			}
			return true
		})
	}
	for i, n := range f.nodes {
		got := f.checkExactly(i)
		for ctID, pid := range pids[i] {
			if got[ctID] != pid {
				t.Errorf("%s restarted by a same-content rewrite: pid %d -> %d", ctID, pid, got[ctID])
			}
		}
		if steps := stepLines(n.log()[logLen[i]:]); len(steps) != 0 {
			t.Errorf("%s: the agent acted on a same-content rewrite:\n%s", f.names[i], strings.Join(steps, "\n"))
		}
	}

	// A node whose agent is stopped fails alone; the others converge.
	down := 1
	f.nodes[down].kill(syscall.SIGTERM)
	for i := range f.nodes {
		f.cts[i] = append(f.cts[i], fleetCT{Name: id(i, "c")})
	}
	code, out, rc := f.play("vzd_wait_retries=15")
	if code == 0 {
		t.Fatalf("playbook succeeded with node %s's agent stopped\n%s", f.names[down], out)
	}
	for i := range f.nodes {
		r := rc[f.names[i]]
		if (r.failed != 0) != (i == down) {
			t.Fatalf("%s: %+v (only %s should fail)\n%s", f.names[i], r, f.names[down], out)
		}
		if i != down {
			f.checkExactly(i)
		}
	}
	if _, err := os.Stat(filepath.Join(f.nodes[down].conf, id(down, "c")+".hcl")); err != nil {
		t.Fatalf("the stopped node's file was not written: %v", err)
	}
	// Its agent back, the next run catches it up; its containers kept
	// running across the agent's absence.
	f.nodes[down].start()
	f.playOK()
	for i := range f.nodes {
		got := f.checkExactly(i)
		for ctID, pid := range pids[i] {
			if got[ctID] != pid {
				t.Errorf("%s restarted: pid %d -> %d", ctID, pid, got[ctID])
			}
		}
	}

	// A bad variable on one node is refused by validate before any node's
	// file changes, the good change on another node included.
	before := make([]map[string]string, len(f.nodes))
	for i, n := range f.nodes {
		before[i] = confFiles(t, n)
	}
	f.cts[0][0].Memory = map[string]string{"ram": "192M"}
	f.cts[2][0].Memory = map[string]string{"ram": "lots"}
	code, out, _ = f.play()
	if code == 0 {
		t.Fatalf("a bad variable was accepted\n%s", out)
	}
	if !strings.Contains(out, "failed to validate") {
		t.Errorf("the failure is not validate's:\n%s", out)
	}
	for i, n := range f.nodes {
		if after := confFiles(t, n); !mapsEqual(before[i], after) {
			t.Errorf("%s: config files changed by a refused run", f.names[i])
		}
	}
	if got := cgroupFile("memory", id(0, "a"), "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Errorf("%s memory limit %s after a refused run", id(0, "a"), got)
	}
	f.cts[2][0].Memory = nil
	f.playOK()
	if got := cgroupFile("memory", id(0, "a"), "memory.limit_in_bytes"); got != strconv.Itoa(192<<20) {
		t.Errorf("%s memory limit %s, want 192M applied live", id(0, "a"), got)
	}
	if got := running(f.nodes[0])[id(0, "a")]; got != pids[0][id(0, "a")] {
		t.Errorf("%s restarted by a live change: pid %d -> %d", id(0, "a"), pids[0][id(0, "a")], got)
	}

	// Removed from the inventory: stopped, data kept. Destroyed only when
	// vzd_destroy names it; then dropped from vzd_destroy, its file goes.
	gone := id(0, "b")
	f.cts[0] = slices.DeleteFunc(f.cts[0], func(c fleetCT) bool { return c.Name == gone })
	f.playOK()
	f.checkExactly(0)
	if c, ok := f.nodes[0].ct(gone); !ok || !c.Orphaned || c.Actual == "running" {
		t.Fatalf("%s after removal: %+v (present %v), want stopped and orphaned", gone, c, ok)
	}
	img := filepath.Join(f.nodes[0].root, "vz/private", gone, "root.hdd/root.hdd")
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("data of a removed container gone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.nodes[0].conf, gone+".hcl")); !os.IsNotExist(err) {
		t.Fatalf("file of a removed container still there: %v", err)
	}
	f.destroy[0] = []string{gone}
	f.playOK()
	if _, err := os.Stat(filepath.Join(f.nodes[0].root, "vz/private", gone)); !os.IsNotExist(err) {
		t.Fatalf("%s not destroyed: %v", gone, err)
	}
	f.destroy[0] = nil
	rc = f.playOK()
	if _, err := os.Stat(filepath.Join(f.nodes[0].conf, gone+".hcl")); !os.IsNotExist(err) {
		t.Fatalf("destroyed container's file kept after vzd_destroy dropped it: %v", err)
	}
	for i := range f.nodes {
		f.checkExactly(i)
		if i != 0 && rc[f.names[i]].changed != 0 {
			t.Errorf("%s changed by another node's removal", f.names[i])
		}
	}
}

// stepLines returns the agent log lines that record a step being run.
func stepLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="step applied"`) {
			out = append(out, l)
		}
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
