package spec

import (
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, patterns ...string) {
	for _, pat := range patterns {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
}

// roundTrip checks that a container that parsed cleanly converts to HCL
// that parses back to the same spec.
func roundTrip(t *testing.T, cs []*Container, p Paths) {
	out := WriteHCL(cs, p, nil)
	back, diags := ParseFile("fuzz.hcl", out, p, nil, ParseOptions{Format: FormatHCL})
	if len(back) != len(cs) {
		t.Fatalf("converted file has %d containers, want %d: %v\n%s", len(back), len(cs), diags, out)
	}
	for i := range cs {
		if cs[i].Hash() != back[i].Hash() {
			t.Fatalf("hash changed by conversion:\n%s", out)
		}
	}
}

func FuzzHCL(f *testing.F) {
	addSeeds(f, "../examples/*.hcl", "testdata/golden/*.hcl")
	f.Add([]byte("container \"a\" {\n  sysctl = { \"net.x\" = 1 }\n  devices = [\"/dev/fuse:rw\"]\n}\n"))
	p := DefaultPaths()
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, diags := ParseFile("fuzz.hcl", data, p, nil, ParseOptions{Format: FormatHCL})
		ParseGlobal("fuzz.hcl", data)
		IsGlobalHCL(data)
		if !diags.HasErrors() {
			roundTrip(t, cs, p)
		}
	})
}

func FuzzLegacy(f *testing.F) {
	addSeeds(f, "../examples/*.conf", "testdata/golden/*.conf", "testdata/compat/*/*")
	p := DefaultPaths()
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, diags := ParseFile("101.conf", data, p, nil, ParseOptions{Format: FormatLegacy})
		g, _ := ParseGlobalLegacy("vz.conf", data)
		ParseFile("102.conf", []byte("ONBOOT=yes\n"), p, g, ParseOptions{})
		Sniff(data)
		if !diags.HasErrors() {
			roundTrip(t, cs, p)
		}
	})
}
