package templates

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"vzd/actuators/image"
	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// TestBenchCreateFromTemplate measures what scripts/bench-templates.sh
// reports: creating a container image from a cached template with the
// images actuator until it is ready to boot (on disk, under its final
// name). At the default disk size that is a sparse copy of the template's
// presized image (no resize2fs), fsync, rename; above it (debian at 20G)
// the same copy grown offline, below it (debian at 2G) a copy of the
// tight template image grown offline. It
// only runs under VZD_BENCH_TEMPLATES=1 and asserts nothing about time;
// it writes one JSON line per case to $VZD_BENCH_OUT.
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
	for _, bc := range []struct {
		label, template string
		disk            uint64
	}{
		{"busybox", "busybox", image.DefaultSize},
		{"debian-12-x86_64", "debian-12-x86_64", image.DefaultSize},
		{"debian-12-x86_64@20G", "debian-12-x86_64", 20 << 30},
		{"debian-12-x86_64@2G", "debian-12-x86_64", 2 << 30},
	} {
		src, err := cache.Image(t.Context(), bc.template, templates.NewProgress(os.Stderr))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := cache.Info(bc.template)
		copied := src // what Create copies, for the report
		if p := image.PresizedPath(src, min(bc.disk, image.DefaultSize)); bc.disk >= image.DefaultSize && fileExists(p) {
			copied = p
		}
		var times []time.Duration
		for i := range runs {
			id := fmt.Sprintf("bench%d", i)
			c := &spec.Container{ID: id, Private: filepath.Join(node, "vz/private", id),
				Root: filepath.Join(node, "vz/root", id), Disk: spec.Disk{Size: bc.disk}}
			start := time.Now()
			if err := img.Create(t.Context(), c, src); err != nil {
				t.Fatal(err)
			}
			times = append(times, time.Since(start))
			if err := os.RemoveAll(c.Private); err != nil {
				t.Fatal(err)
			}
		}
		raw := msList(times)
		slices.Sort(times)
		med := (times[runs/2-1] + times[runs/2]) / 2
		var st syscall.Stat_t
		syscall.Stat(copied, &st)
		line, _ := json.Marshal(map[string]any{
			"label": bc.label, "template": bc.template, "disk": bc.disk, "method": "vzd-image-copy", "runs": runs,
			"median_ms": float64(med.Microseconds()) / 1000,
			"min_ms":    float64(times[0].Microseconds()) / 1000,
			"max_ms":    float64(times[runs-1].Microseconds()) / 1000,
			"times_ms":  raw,
			"image":     src, "image_bytes": info.Size, "copied": filepath.Base(copied),
			"copied_allocated": st.Blocks * 512, "presized": copied != src,
			"tarball": info.Tarball, "tree_files": info.TreeFiles,
		})
		fmt.Fprintf(out, "%s\n", line)
		t.Logf("%s", line)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func msList(ds []time.Duration) []float64 {
	var out []float64
	for _, d := range ds {
		out = append(out, float64(d.Microseconds())/1000)
	}
	return out
}
