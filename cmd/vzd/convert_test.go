package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vzd/spec"
)

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	src := "NAME=web\nPHYSPAGES=0:262144\nIP_ADDRESS=\"192.0.2.4 2001:db8::4\"\nNETIF=\"ifname=eth1,bridge=br0,mac=02:00:00:00:00:04\"\nNAMESERVER=inherit\nTEMPLATES=\".nginx .php\"\nX_UNKNOWN=1\n"
	f := writeFile(t, dir, "101.conf", src)
	global := writeFile(t, dir, "vz.conf", "VE_PRIVATE=/vz/private/$VEID\nCPUUNITS=500\n")
	var out, errb strings.Builder
	code := run([]string{"--global-config", global, "convert", f}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "X_UNKNOWN") {
		t.Errorf("unknown key not reported: %q", errb.String())
	}
	hcl := out.String()
	flat := strings.Join(strings.Fields(hcl), " ") // ignore alignment
	for _, want := range []string{`container "101" {`, `name = "web"`, `ram = "1G"`, `units = 500`, `nameservers = "inherit"`, `interface "venet0"`, `bridge = "br0"`, `templates = ["nginx", "php"]`} {
		if !strings.Contains(flat, want) {
			t.Errorf("output lacks %q:\n%s", want, hcl)
		}
	}
	// Converting then parsing gives the same spec hash.
	g, _, err := spec.LoadGlobal(global)
	if err != nil {
		t.Fatal(err)
	}
	p := spec.DefaultPaths()
	orig, _ := spec.ParseFile(f, []byte(src), p, g, spec.ParseOptions{})
	back, diags := spec.ParseFile(filepath.Join(dir, "101.hcl"), []byte(hcl), p, g, spec.ParseOptions{})
	if diags.HasErrors() || len(back) != 1 || back[0].Hash() != orig[0].Hash() {
		t.Errorf("round trip: %v\n%s", diags, hcl)
	}
}

func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "101.conf", "PHYSPAGES=lots\n")
	code, out, errOut := runVzd(t, "convert", bad)
	if code != 1 || out != "" || !strings.Contains(errOut, bad+":1:1: error: PHYSPAGES") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	odd := writeFile(t, dir, "ve.conf", "ONBOOT=yes\n")
	if code, _, _ := runVzd(t, "convert", odd); code != 1 {
		t.Errorf("file without an ID: exit %d", code)
	}
	if code, out, _ := runVzd(t, "convert", "--id", "7", odd); code != 0 || !strings.Contains(out, `container "7"`) {
		t.Errorf("--id: exit %d: %s", code, out)
	}
	if code, _, _ := runVzd(t, "convert"); code != 1 {
		t.Errorf("no args: exit %d", code)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Fatal(err)
	}
}
