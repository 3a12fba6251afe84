package reconciler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vzd/spec"
)

// The loop's own cost, without the node: a pass over many converged
// containers must be cheap, since the agent makes one on every file event,
// every SIGHUP and every resync. scripts/bench-agent.sh measures the real
// agent beside these.

const benchContainers = 200

// newBench returns a reconciler over the fake node whose n containers are
// converged, with a status consumer as the agent has (publish builds the
// whole status only when someone listens).
func newBench(b *testing.B, n int, load func(root string) func() (*spec.Set, error)) (*Reconciler, *fakeNode) {
	b.Helper()
	root := b.TempDir()
	fc := newFakeConfig(root)
	node := newFakeNode()
	cfg := Config{Paths: fc.paths, Node: node, Load: fc.load, NoWatch: true, BootID: "boot-1",
		BackoffBase: time.Hour, BackoffMax: time.Hour, OnChange: func() {}}
	if load != nil {
		cfg.Load = load(root)
	} else {
		for i := range n {
			fc.put(fmt.Sprintf("ct%03d", i), nil)
		}
	}
	r := New(cfg)
	b.Cleanup(r.q.Close)
	drainBench(b, r)
	node.steps()
	drainBench(b, r)
	if s := node.steps(); len(s) > 0 {
		b.Fatalf("second pass is not a no-op: %q", s)
	}
	if st := r.Status(); st.Running != n {
		b.Fatalf("%d of %d containers running", st.Running, n)
	}
	return r, node
}

// drainBench runs one pass and syncs every queued container in this
// goroutine.
func drainBench(b *testing.B, r *Reconciler) {
	ctx := context.Background()
	r.pass(ctx)
	for r.q.Len() > 0 {
		id, ok := r.q.Get()
		if !ok {
			b.Fatal("queue closed")
		}
		r.handle(ctx, id)
	}
}

func benchNoop(b *testing.B, r *Reconciler, node *fakeNode) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		drainBench(b, r)
	}
	b.StopTimer()
	if s := node.steps(); len(s) > 0 {
		b.Fatalf("no-op passes did work: %q", s)
	}
}

// BenchmarkPassNoop200 is one pass over 200 converged containers with the
// in-memory config: queueing, observing the fake, planning, status, and
// reading the 200 records from disk (ListRecords).
func BenchmarkPassNoop200(b *testing.B) {
	r, node := newBench(b, benchContainers, nil)
	benchNoop(b, r, node)
}

// BenchmarkPassNoop200HCL is the same with 200 real HCL files parsed by
// spec.Load on every pass, as the agent does.
func BenchmarkPassNoop200HCL(b *testing.B) {
	r, node := newBench(b, benchContainers, func(root string) func() (*spec.Set, error) {
		p := spec.Paths{Prefix: root, ConfigDir: filepath.Join(root, "etc/vz/conf"), GlobalConfig: filepath.Join(root, "etc/vz/vz.conf")}
		if err := os.MkdirAll(p.ConfigDir, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range benchContainers {
			id := fmt.Sprintf("ct%03d", i)
			body := fmt.Sprintf("container %q {\n  ostemplate = \"busybox\"\n  memory {\n    ram = \"128M\"\n  }\n  disk {\n    size = \"128M\"\n  }\n}\n", id)
			if err := os.WriteFile(filepath.Join(p.ConfigDir, id+".hcl"), []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		return func() (*spec.Set, error) { return spec.Load(p) }
	})
	benchNoop(b, r, node)
}

// BenchmarkStatus200 is one status snapshot of 200 containers: the loop
// takes one after every container it syncs.
func BenchmarkStatus200(b *testing.B) {
	r, _ := newBench(b, benchContainers, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_ = r.Status()
	}
}
