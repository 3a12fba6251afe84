package spec

import (
	"os"
	"strings"
	"testing"
)

// The examples in docs/FORMATS.md must say what they claim.
func TestFormatsDocExamples(t *testing.T) {
	data, err := os.ReadFile("../docs/FORMATS.md")
	if err != nil {
		t.Skip("docs/FORMATS.md not present")
	}
	blocks := strings.Split(string(data), "```")
	n := 0
	for i := 1; i < len(blocks); i += 2 {
		lang, body, _ := strings.Cut(blocks[i], "\n")
		var diags Diagnostics
		switch {
		case lang == "hcl" && IsGlobalHCL([]byte(body)):
			_, diags = ParseGlobalHCL("FORMATS.md", []byte(body))
		case lang == "hcl":
			var cs []*Container
			cs, diags = ParseFile("FORMATS.md", []byte(body), DefaultPaths(), nil, ParseOptions{Format: FormatHCL})
			if len(cs) == 0 {
				t.Errorf("block %d: no containers", i)
			}
		case lang == "sh":
			_, diags = ParseFile("101.conf", []byte(body), DefaultPaths(), nil, ParseOptions{})
		default:
			continue
		}
		n++
		if len(diags) > 0 {
			t.Errorf("block %d (%s): %v", i, lang, diags)
		}
	}
	if n < 3 {
		t.Errorf("only %d examples checked", n)
	}
}
