package spec

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

// goldenView is what a golden file holds: the decoded containers and the
// diagnostics, as text, in order.
type goldenView struct {
	Containers  []*Container `json:"containers"`
	Hashes      []string     `json:"hashes"`
	Diagnostics []string     `json:"diagnostics"`
}

func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/golden/*")
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden") {
			continue
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			cs, diags := ParseFile(in, data, DefaultPaths(), nil, ParseOptions{})
			v := goldenView{Containers: cs}
			for _, c := range cs {
				v.Hashes = append(v.Hashes, c.Hash())
			}
			for _, d := range diags {
				v.Diagnostics = append(v.Diagnostics, d.String())
			}
			got, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := in + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./spec -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s:\n%s", in, golden, got)
			}
		})
	}
}
