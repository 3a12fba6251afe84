package templates

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"vzd/actuators/image"
	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// TestBenchCreateFromTemplate measures what scripts/bench-templates.sh
// reports: creating a container image from a cached template with the
// images actuator (sparse copy of the cache image, offline grow to the
// container's disk size, fsync, rename) until it is ready to boot. It only
// runs under VZD_BENCH_TEMPLATES=1 and asserts nothing about time; it
// writes one JSON line per template to $VZD_BENCH_OUT.
func TestBenchCreateFromTemplate(t *testing.T) {
	if os.Getenv("VZD_BENCH_TEMPLATES") != "1" {
		t.Skip("benchmark: set VZD_BENCH_TEMPLATES=1 (scripts/bench-templates.sh does)")
	}
	testutil.RequireLoop(t)
	out, err := os.OpenFile(os.Getenv("VZD_BENCH_OUT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	prefix := os.Getenv("VZD_BENCH_CACHE")
	if prefix == "" {
		prefix = "/var/tmp/vzd-debian-cache"
	}
	cache := templates.NewCache(spec.Paths{Prefix: prefix}, nil)
	node := t.TempDir()
	img, err := image.New(image.Config{Paths: spec.Paths{Prefix: node}})
	if err != nil {
		t.Fatal(err)
	}
	const runs = 10
	const disk = 10 << 30
	for _, name := range []string{"busybox", "debian-12-x86_64"} {
		src, err := cache.Image(t.Context(), name, templates.NewProgress(os.Stderr))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := cache.Info(name)
		var times []time.Duration
		for i := range runs {
			id := fmt.Sprintf("bench%d", i)
			c := &spec.Container{ID: id, Private: filepath.Join(node, "vz/private", id),
				Root: filepath.Join(node, "vz/root", id), Disk: spec.Disk{Size: disk}}
			start := time.Now()
			if err := img.Create(t.Context(), c, src); err != nil {
				t.Fatal(err)
			}
			times = append(times, time.Since(start))
			if err := os.RemoveAll(c.Private); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(times)
		med := (times[runs/2-1] + times[runs/2]) / 2
		line, _ := json.Marshal(map[string]any{
			"template": name, "method": "vzd-image-copy", "runs": runs,
			"median_ms": float64(med.Microseconds()) / 1000,
			"min_ms":    float64(times[0].Microseconds()) / 1000,
			"max_ms":    float64(times[runs-1].Microseconds()) / 1000,
			"image":     src, "image_bytes": info.Size, "tarball": info.Tarball, "tree_files": info.TreeFiles,
		})
		fmt.Fprintf(out, "%s\n", line)
		t.Logf("%s", line)
	}
}
