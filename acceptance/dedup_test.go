package acceptance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vzd/dedup"
	"vzd/internal/testutil"
)

// The file cache through the agent, with the default (unprivileged)
// containers: two containers of one template, a scan, a restart of each
// (cache decisions take effect at the next mount). Both roots are then
// overlays reading the store's objects, both see the same files, a write in
// one stays in that one, and the cache's statistics count both.
func TestDedupThroughAgent(t *testing.T) {
	n := newNode(t)
	n.start()
	a, b := testutil.UniqueName("dda"), testutil.UniqueName("ddb")
	for _, id := range []string{a, b} {
		n.write(id+".hcl", busybox(id, ""))
	}
	for _, id := range []string{a, b} {
		n.waitRunning(id)
	}
	before := map[string]string{}
	for _, id := range []string{a, b} {
		out, err := n.vzd("exec", id, "--", "md5sum", "/bin/busybox")
		if err != nil {
			t.Fatalf("exec %s: %v\n%s", id, err, out)
		}
		before[id] = strings.Fields(out)[0]
	}

	if out, err := n.vzd("pfcache", "scan"); err != nil {
		t.Fatalf("pfcache scan: %v\n%s", err, out)
	}
	// Stop and start each through its file: the next mount takes the
	// cache layers.
	for _, id := range []string{a, b} {
		n.write(id+".hcl", busybox(id, `  state = "stopped"`))
	}
	for _, id := range []string{a, b} {
		n.waitFor(id+" stopped", 60*time.Second, func() bool {
			c, ok := n.ct(id)
			return ok && c.Actual == "stopped" && c.LastError == ""
		})
	}
	for _, id := range []string{a, b} {
		n.write(id+".hcl", busybox(id, ""))
	}
	objects := filepath.Join(n.root, "vz/pfcache/mnt/objects")
	for _, id := range []string{a, b} {
		n.waitRunning(id)
		// The container's own mount table: its root is an overlay whose
		// data layer is the store.
		mi, err := n.vzd("exec", id, "--", "cat", "/proc/self/mountinfo")
		if err != nil {
			t.Fatalf("exec %s: %v\n%s", id, err, mi)
		}
		if !strings.Contains(mi, "overlay") || !strings.Contains(mi, "datadir+="+objects) {
			t.Errorf("%s: root is not an overlay over the store:\n%s", id, mi)
		}
		out, err := n.vzd("exec", id, "--", "md5sum", "/bin/busybox")
		if err != nil {
			t.Fatalf("exec %s: %v\n%s", id, err, out)
		}
		if got := strings.Fields(out)[0]; got != before[id] {
			t.Errorf("%s: /bin/busybox reads %s through the cache, %s before", id, got, before[id])
		}
	}
	st := pfStats(t, n)
	if st.Objects == 0 || st.SavedBytes == 0 || len(st.Containers) < 2 {
		t.Errorf("cache stats after both started on it: %+v", st)
	}

	// A write in one container: the other and the store are unchanged.
	if out, err := n.vzd("exec", a, "--", "sh", "-c", "echo mine > /bin/busybox.note"); err != nil {
		t.Fatalf("write in %s: %v\n%s", a, err, out)
	}
	if out, err := n.vzd("exec", b, "--", "ls", "/bin/busybox.note"); err == nil {
		t.Errorf("%s sees a file written in %s: %s", b, a, out)
	}
	if out, err := n.vzd("exec", b, "--", "md5sum", "/bin/busybox"); err != nil || strings.Fields(out)[0] != before[b] {
		t.Errorf("%s: /bin/busybox after a write in %s: %v %s", b, a, err, out)
	}
	if ents, err := os.ReadDir(objects); err != nil || len(ents) == 0 {
		t.Errorf("store objects: %v, %d entries", err, len(ents))
	}
}

func pfStats(t *testing.T, n *node) dedup.Stats {
	t.Helper()
	out, err := n.vzd("pfcache", "stats", "--json")
	if err != nil {
		t.Fatalf("pfcache stats: %v\n%s", err, out)
	}
	var st dedup.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("pfcache stats json: %v\n%s", err, out)
	}
	return st
}
