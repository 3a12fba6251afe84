package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runVzd runs the CLI in-process with no global file and returns its exit
// code and output.
func runVzd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{"--global-config", filepath.Join(t.TempDir(), "none.conf")}, args...)
	code := run(all, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateGoodFile(t *testing.T) {
	f := writeFile(t, t.TempDir(), "web.hcl", "container \"web\" {\n  memory { ram = \"1G\" }\n}\n")
	code, out, _ := runVzd(t, "validate", f)
	if code != 0 || out != "" {
		t.Errorf("exit %d, output %q; want 0 and nothing", code, out)
	}
}

func TestValidateBadFile(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "web.hcl", "container \"web\" {\n  hostname = \"bad_name\"\n  memory {\n    ram = true\n  }\n}\n")
	code, out, _ := runVzd(t, "validate", f)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := f + ":2:3: error: hostname \"bad_name\" is not a valid host name (RFC 1123)\n" +
		f + ":4:11: error: memory.ram: expected a size such as \"512M\" or a number of bytes, got bool\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	code, out, errOut := runVzd(t, "validate", "-q", f)
	if code != 1 || out != "" || errOut != "" {
		t.Errorf("-q: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestValidateJSON(t *testing.T) {
	f := writeFile(t, t.TempDir(), "101.conf", "ONBOOT=maybe\nKMEMSIZE=1\n")
	code, out, _ := runVzd(t, "validate", "--json", f)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var got []jsonDiag
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got) != 2 || got[0].Severity != "error" || got[0].Line != 1 || got[0].File != f ||
		got[1].Severity != "warning" || got[1].Line != 2 || !strings.Contains(got[1].Message, "KMEMSIZE") {
		t.Errorf("got %+v", got)
	}
	// No diagnostics is an empty array, not null.
	ok := writeFile(t, t.TempDir(), "102.conf", "ONBOOT=yes\n")
	_, out, _ = runVzd(t, "validate", "--json", ok)
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("clean file: %q", out)
	}
}

// Ansible's validate passes a temporary file with a random name.
func TestValidateRandomName(t *testing.T) {
	dir := t.TempDir()
	legacy := writeFile(t, dir, "tmpa8f3k2", "ONBOOT=yes\nPHYSPAGES=0:1G\n")
	if code, out, _ := runVzd(t, "validate", "--id", "101", legacy); code != 0 {
		t.Errorf("legacy with --id: exit %d: %s", code, out)
	}
	if code, out, _ := runVzd(t, "validate", legacy); code != 1 || !strings.Contains(out, "--id") {
		t.Errorf("legacy without --id: exit %d: %s", code, out)
	}
	hcl := writeFile(t, dir, "tmpq9z", "# managed by ansible\ncontainer \"web\" {\n}\n")
	if code, out, _ := runVzd(t, "validate", hcl); code != 0 {
		t.Errorf("sniffed HCL: exit %d: %s", code, out)
	}
	if code, _, _ := runVzd(t, "validate", "--format", "legacy", "--id", "5", hcl); code != 1 {
		t.Errorf("HCL forced to legacy should fail")
	}
	if code, _, _ := runVzd(t, "validate", "--format", "yaml", hcl); code != 1 {
		t.Errorf("bad --format accepted")
	}
}

func TestValidateDirectory(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "101.conf", "IP_ADDRESS=192.0.2.9\n")
	b := writeFile(t, dir, "web.hcl", "container \"web\" {\n  network {\n    interface \"eth0\" { ip = [\"192.0.2.9/24\"] }\n  }\n}\n")
	writeFile(t, dir, "ve-basic.conf-sample", "garbage")
	writeFile(t, dir, "web.hcl~", "garbage")
	code, out, _ := runVzd(t, "validate", dir)
	if code != 1 || !strings.Contains(out, a+":1:1: error: address 192.0.2.9") || !strings.Contains(out, b+":3:") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// The default path is the config directory.
	code, out, _ = runVzd(t, "--config-dir", dir, "validate")
	if code != 1 || !strings.Contains(out, "address 192.0.2.9") {
		t.Errorf("default dir: exit %d:\n%s", code, out)
	}
}

func TestValidateChecksGlobal(t *testing.T) {
	dir := t.TempDir()
	g := writeFile(t, dir, "vz.conf", "PHYSPAGES=lots\n")
	var out, errb bytes.Buffer
	code := run([]string{"--global-config", g, "--config-dir", t.TempDir(), "validate"}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), g+":1:1: error: PHYSPAGES") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
	h := writeFile(t, dir, "defaults.hcl", "defaults {\n  onboot = \"yes\"\n}\n")
	if code, out, _ := runVzd(t, "validate", h); code != 1 || !strings.Contains(out, "onboot: expected true or false") {
		t.Errorf("global HCL: exit %d:\n%s", code, out)
	}
}

func TestValidateHelp(t *testing.T) {
	code, out, _ := runVzd(t, "validate", "--help")
	if code != 0 || !strings.Contains(out, "--id") || !strings.Contains(out, "Ansible") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// A file validated on its own is checked against the config directory.
func TestValidateFileAgainstDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "101.conf", "IP_ADDRESS=192.0.2.9\nUUID=2c0b3e7a-5d51-4c8e-a1f4-3b9d6e2a7c10\n")
	tmp := writeFile(t, t.TempDir(), "ansible-tmp", "container \"web\" {\n  uuid = \"2c0b3e7a-5d51-4c8e-a1f4-3b9d6e2a7c10\"\n  network {\n    interface \"eth0\" { ip = [\"192.0.2.9/24\"] }\n  }\n}\n")
	code, out, _ := runVzd(t, "--config-dir", dir, "validate", tmp)
	if code != 1 || !strings.Contains(out, tmp+":2:3: error: uuid 2c0b3e7a-5d51-4c8e-a1f4-3b9d6e2a7c10 is already claimed by container 101 at "+dir+"/101.conf:2:1") ||
		!strings.Contains(out, tmp+":4:") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// Replacing container 101 itself is not a conflict.
	same := writeFile(t, t.TempDir(), "new-101", "IP_ADDRESS=192.0.2.9\n")
	if code, out, _ := runVzd(t, "--config-dir", dir, "validate", "--id", "101", same); code != 0 {
		t.Errorf("replacing 101: exit %d:\n%s", code, out)
	}
}
