package dedup

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"vzd/spec"
)

func TestDigestRecord(t *testing.T) {
	st := &unix.Stat_t{Size: 12345, Mtim: unix.Timespec{Sec: 1700000000, Nsec: 42}}
	d := "da39a3ee5e6b4b0d3255bfef95601890afd80709"
	v := formatDigest(d, st)
	if got, ok := parseDigest(v, st); !ok || got != d {
		t.Fatalf("round trip of %q: %q %v", v, got, ok)
	}
	changed := []*unix.Stat_t{
		{Size: 12346, Mtim: st.Mtim},
		{Size: st.Size, Mtim: unix.Timespec{Sec: 1700000000, Nsec: 43}},
	}
	for _, c := range changed {
		if _, ok := parseDigest(v, c); ok {
			t.Errorf("digest %q accepted for a changed file %+v", v, c)
		}
	}
	for _, bad := range []string{"", "zz", d, d + " 12345", "g" + d[1:] + " 12345 1700000000000000042", d + " x 1"} {
		if _, ok := parseDigest(bad, st); ok {
			t.Errorf("bad record %q accepted", bad)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	got := withDefaults(spec.DedupConfig{MinSize: 1})
	if got.Enabled {
		t.Error("withDefaults enabled a disabled cache")
	}
	def := Defaults()
	if got.MinSize != 1 || got.MaxSize != def.MaxSize || got.MinContainers != 2 || !slices.Equal(got.Dirs, def.Dirs) ||
		got.CacheSize != def.CacheSize || got.Schedule != def.Schedule {
		t.Errorf("withDefaults: %+v", got)
	}
	// The spec package's defaults and ours agree.
	if g := spec.DefaultGlobal().Dedup; g.MinSize != def.MinSize || g.MaxSize != def.MaxSize || g.CacheSize != def.CacheSize ||
		g.Schedule != def.Schedule || g.MinContainers != def.MinContainers || !slices.Equal(g.Dirs, def.Dirs) || g.Enabled != def.Enabled {
		t.Errorf("spec defaults %+v differ from dedup's %+v", g, def)
	}
}

func TestObjectRel(t *testing.T) {
	d := "da39a3ee5e6b4b0d3255bfef95601890afd80709"
	if got := objectRel(d); got != "/da/39a3ee5e6b4b0d3255bfef95601890afd80709" {
		t.Fatal(got)
	}
}
