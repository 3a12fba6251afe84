package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every file in examples/ must parse and validate with no error: they are
// what operators copy.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../examples/*")
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultPaths()
	g, gdiags, err := LoadGlobal("../examples/vz.conf")
	if err != nil || gdiags.HasErrors() {
		t.Fatalf("vz.conf: %v %v", err, gdiags.Err())
	}
	hg, hdiags, err := LoadGlobal("../examples/defaults.hcl")
	if err != nil || hdiags.HasErrors() {
		t.Fatalf("defaults.hcl: %v %v", err, hdiags.Err())
	}
	n := 0
	for _, f := range files {
		base := filepath.Base(f)
		if fi, err := os.Stat(f); err != nil || fi.IsDir() || base == "vz.conf" || base == "defaults.hcl" || strings.HasSuffix(base, ".md") {
			continue
		}
		t.Run(base, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, gl := range []*Global{nil, g, hg} {
				cs, diags := ParseFile(f, data, p, gl, ParseOptions{})
				if diags.HasErrors() || len(cs) == 0 {
					t.Fatalf("%d containers, diagnostics:\n%v", len(cs), diags.Err())
				}
				for _, d := range diags {
					t.Logf("%v", d)
				}
			}
			n++
		})
	}
	if n < 5 {
		t.Errorf("only %d example container files", n)
	}
}

func TestExamplesAddressesAreDocumentationRanges(t *testing.T) {
	files, _ := filepath.Glob("../examples/*")
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.IsDir() {
			continue
		}
		data, _ := os.ReadFile(f)
		cs, _ := ParseFile(f, data, DefaultPaths(), nil, ParseOptions{})
		for _, c := range cs {
			for _, ifc := range c.Network.Interfaces {
				for _, ip := range ifc.IPs {
					if !documentationAddr(ip.Addr().String()) {
						t.Errorf("%s: %s is not from a documentation range or 10/8", f, ip)
					}
				}
			}
			for _, a := range c.Network.Nameservers {
				if !documentationAddr(a.String()) {
					t.Errorf("%s: nameserver %s is not from a documentation range", f, a)
				}
			}
		}
	}
}

func documentationAddr(s string) bool {
	for _, p := range []string{"192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:", "10."} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
