package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoad100 loads a directory of 50 HCL and 50 legacy files, what
// the agent does on every change of the config directory.
func BenchmarkLoad100(b *testing.B) {
	dir := b.TempDir()
	p := Paths{Prefix: "/", ConfigDir: dir}
	full, err := os.ReadFile("../examples/full.hcl")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		src := fmt.Sprintf("container \"ct%d\" {\n  memory {\n    ram = \"1G\"\n  }\n  network {\n    interface \"eth0\" { ip = [\"10.1.%d.%d/32\"] }\n  }\n}\n", i, i/200, i%200+1)
		if i == 0 {
			src = string(full)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("ct%d.hcl", i)), []byte(src), 0o644); err != nil {
			b.Fatal(err)
		}
		legacy := fmt.Sprintf("PHYSPAGES=\"0:1G\"\nDISKSPACE=\"10G:10G\"\nIP_ADDRESS=\"10.2.0.%d\"\nHOSTNAME=\"ct%d.example.com\"\nKMEMSIZE=\"1:2\"\n", i+1, 1000+i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.conf", 1000+i)), []byte(legacy), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		set, err := Load(p)
		if err != nil || len(set.Containers) != 100 {
			b.Fatalf("%v: %d containers: %v", err, len(set.Containers), set.Diags.Err())
		}
	}
}

func BenchmarkHash(b *testing.B) {
	data, err := os.ReadFile("../examples/full.hcl")
	if err != nil {
		b.Fatal(err)
	}
	cs, _ := ParseFile("full.hcl", data, DefaultPaths(), nil, ParseOptions{})
	for b.Loop() {
		cs[0].Hash()
	}
}
