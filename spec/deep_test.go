package spec

import (
	"strings"
	"testing"
)

// hclsyntax recurses per nesting level; a deeply nested file must be
// refused before it reaches the parser, not crash the agent.
func TestHCLDeepNestingRefused(t *testing.T) {
	attr := func(expr string) string { return "container \"a\" {\n  hostname = " + expr + "\n}\n" }
	// Full size for two of them (a million "[" overflowed the stack before
	// the guard); smaller for the rest, which take the same path.
	n, small := MaxFileSize-100, 64<<10
	inputs := map[string]string{
		"brackets":    attr(strings.Repeat("[", n)),
		"parens":      attr(strings.Repeat("(", small)),
		"braces":      attr(strings.Repeat("{", small)),
		"bang":        attr(strings.Repeat("!", n)),
		"minus":       attr(strings.Repeat("-", small)),
		"conditional": attr(strings.Repeat("true ? 1 : ", small/12) + "1"),
		"binary":      attr(strings.Repeat("1 + ", small/5) + "1"),
		"templates":   attr(strings.Repeat("\"${", small/4)),
		"blocks":      strings.Repeat("container \"a\" {\n", small/16),
		"index":       attr("x" + strings.Repeat("[0]", small/3)),
	}
	for name, src := range inputs {
		t.Run(name, func(t *testing.T) {
			if len(src) > MaxFileSize {
				src = src[:MaxFileSize]
			}
			_, diags := ParseFile("a.hcl", []byte(src), DefaultPaths(), nil, ParseOptions{})
			if !diags.HasErrors() {
				t.Errorf("accepted")
			}
		})
	}
}

func TestHCLManyDevicesAccepted(t *testing.T) {
	var b strings.Builder
	b.WriteString("container \"a\" {\n")
	for i := 0; i < 5000; i++ {
		b.WriteString("  device {\n    path = \"/dev/fuse\"\n  }\n")
	}
	b.WriteString("}\n")
	_, diags := ParseFile("a.hcl", []byte(b.String()), DefaultPaths(), nil, ParseOptions{})
	if diags.HasErrors() {
		t.Errorf("%v", diags[0])
	}
}

func TestHCLOrdinaryNestingAccepted(t *testing.T) {
	src := "container \"a\" {\n  network {\n    interface \"eth0\" {\n      ip = [\"192.0.2.1/32\"]\n    }\n  }\n  sysctl = { \"net.core.somaxconn\" = (((1024))) }\n  description = \"${\"nested ${\"twice\"}\"}\"\n}\n"
	_, diags := ParseFile("a.hcl", []byte(src), DefaultPaths(), nil, ParseOptions{})
	if len(diags) != 0 {
		t.Errorf("%v", diags)
	}
}
