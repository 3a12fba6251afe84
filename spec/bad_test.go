package spec

import (
	"strings"
	"testing"
)

// Each bad input yields a precise diagnostic (message and line), never a
// panic.
func TestBadInputs(t *testing.T) {
	tests := []struct {
		name, file, src string
		line            int
		msg             string
	}{
		{"hcl syntax", "a.hcl", "container \"a\" {\n  state = \n}\n", 2, "Invalid expression"},
		{"hcl unclosed", "a.hcl", "container \"a\" {\n  onboot = true\n", 1, "Unclosed configuration block"},
		{"hcl NUL", "a.hcl", "container \"a\" {\x00}\n", 1, "NUL bytes"},
		{"legacy NUL", "101.conf", "ONBOOT=yes\nNAME=a\x00b\n", 2, "NUL bytes"},
		{"huge", "101.conf", strings.Repeat("# padding\n", MaxFileSize/10+1), 0, "larger than"},
		{"path traversal label", "a.hcl", "container \"../etc\" {\n}\n", 1, `container ID "../etc" contains "/"`},
		{"dot label", "a.hcl", "container \".hidden\" {\n}\n", 1, `starts with "." or "-"`},
		{"long label", "a.hcl", "container \"" + strings.Repeat("a", 65) + "\" {\n}\n", 1, "longer than 64"},
		{"bad name", "101.conf", "ONBOOT=yes\nNAME=\"a/b\"\n", 2, `name "a/b" contains "/"`},
		{"invalid ip", "a.hcl", "container \"a\" {\n  network {\n    interface \"eth0\" {\n      ip = [\"10.0.0.300/24\"]\n    }\n  }\n}\n", 4, `"10.0.0.300/24" is not an address`},
		{"legacy invalid ip", "101.conf", "IP_ADDRESS=\"192.0.2.1 bogus\"\n", 1, `"bogus" is not an IP address`},
		{"duplicate ip in container", "a.hcl", "container \"a\" {\n  network {\n    interface \"eth0\" { ip = [\"10.0.0.1/24\"] }\n    interface \"eth1\" { ip = [\"10.0.0.1/24\"] }\n  }\n}\n", 4, "10.0.0.1 is listed twice"},
		{"zero ram", "a.hcl", "container \"a\" {\n  memory {\n    ram = 0\n  }\n}\n", 3, "0 is not a usable size"},
		{"legacy zero ram", "101.conf", "PHYSPAGES=0:0\n", 1, "RAM limit of 0"},
		{"disk too small", "a.hcl", "container \"a\" {\n  disk {\n    size = \"10M\"\n  }\n}\n", 3, "less than the 64M floor"},
		{"disk too large", "a.hcl", "container \"a\" {\n  disk {\n    size = \"65T\"\n  }\n}\n", 3, "more than 64T"},
		{"ram absurd", "a.hcl", "container \"a\" {\n  memory {\n    ram = \"17T\"\n  }\n}\n", 3, "more than 16T"},
		{"cpu count", "a.hcl", "container \"a\" {\n  cpu {\n    count = 5000\n  }\n}\n", 3, "cpu.count 5000 is out of range"},
		{"cpu units", "101.conf", "CPUUNITS=1000000\n", 1, "cpu.units 1000000 is out of range"},
		{"wrong type string for number", "a.hcl", "container \"a\" {\n  processes = \"many\"\n}\n", 2, `processes: expected a whole number, got "many"`},
		{"wrong type bool for string", "a.hcl", "container \"a\" {\n  hostname = true\n}\n", 2, "hostname: expected a string, got bool"},
		{"wrong type list for bool", "a.hcl", "container \"a\" {\n  onboot = [1]\n}\n", 2, "onboot: expected true or false"},
		{"bad size unit", "a.hcl", "container \"a\" {\n  memory {\n    ram = \"1Q\"\n  }\n}\n", 3, `unknown unit "Q"`},
		{"legacy bad size", "101.conf", "ONBOOT=yes\nDISKSPACE=\"lots\"\n", 2, `DISKSPACE="lots"`},
		{"legacy unterminated", "101.conf", "NAME=\"abc\n", 1, "unterminated quoted value"},
		{"legacy trailing", "101.conf", "NAME=a b\n", 1, "unexpected text after value"},
		{"legacy no equals", "101.conf", "ONBOOT yes\n", 1, "expected KEY=value"},
		{"functions not allowed", "a.hcl", "container \"a\" {\n  hostname = file(\"/etc/passwd\")\n}\n", 2, "Function calls not allowed"},
		{"variables not allowed", "a.hcl", "container \"a\" {\n  hostname = env.HOME\n}\n", 2, "Variables not allowed"},
		{"sysctl host", "a.hcl", "container \"a\" {\n  sysctl = { \"vm.swappiness\" = 1 }\n}\n", 2, "sysctl vm.swappiness is not namespaced"},
		{"mac", "a.hcl", "container \"a\" {\n  network {\n    interface \"eth0\" {\n      mac = \"zz:00:00:00:00:00\"\n    }\n  }\n}\n", 4, "is not a MAC address"},
		{"hostname", "101.conf", "HOSTNAME=bad_host.example\n", 1, "is not a valid host name"},
		{"too many interfaces", "a.hcl", manyIfaces(16), 2, "16 interfaces; at most 15"},
		{"private escape", "a.hcl", "container \"a\" {\n  private = \"/vz/private/../../etc\"\n}\n", 2, "private /etc is not inside /vz/private"},
		{"legacy root escape", "101.conf", "VE_ROOT=/tmp/$VEID\n", 1, "root /tmp/101 is not inside /vz/root"},
		{"bad state", "a.hcl", "container \"a\" {\n  state = \"paused\"\n}\n", 2, `state "paused" is not one of`},
		{"bad template", "a.hcl", "container \"a\" {\n  ostemplate = \"../../x\"\n}\n", 2, "is not a template name"},
		{"duplicate label in file", "a.hcl", "container \"a\" {\n}\ncontainer \"a\" {\n}\n", 3, `container "a" is declared twice`},
		{"bad uuid", "a.hcl", "container \"a\" {\n  uuid = \"not-a-uuid\"\n}\n", 2, "is not a UUID"},
		{"mtu", "a.hcl", "container \"a\" {\n  network {\n    interface \"eth0\" {\n      mtu = 70000\n    }\n  }\n}\n", 4, "mtu 70000 is out of range"},
		{"unknown block", "a.hcl", "container \"a\" {\n  gpu {\n  }\n}\n", 2, "Unsupported block type"},
		{"cpu limit over count", "101.conf", "CPUS=1\nCPULIMIT=200\n", 2, "more than 1 CPUs can give"},
		{"empty hcl (truncated by an editor)", "a.hcl", "", 0, "file is empty"},
		{"empty legacy", "101.conf", "\n  \n", 0, "file is empty"},
		{"hcl with no blocks", "a.hcl", "# container \"a\" {\n", 0, "no container blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := ParseFile(tt.file, []byte(tt.src), DefaultPaths(), nil, ParseOptions{})
			for _, d := range diags {
				if d.Severity == SeverityError && strings.Contains(d.Message, tt.msg) {
					if d.Pos.Line != tt.line {
						t.Errorf("%q reported at line %d, want %d", d.Message, d.Pos.Line, tt.line)
					}
					if d.Pos.File != tt.file {
						t.Errorf("%q reported in %q", d.Message, d.Pos.File)
					}
					return
				}
			}
			t.Errorf("no error containing %q; got:\n%v", tt.msg, diags)
		})
	}
}

func manyIfaces(n int) string {
	var b strings.Builder
	b.WriteString("container \"a\" {\n  network {\n")
	for i := 0; i < n; i++ {
		b.WriteString("    interface \"eth" + string(rune('a'+i)) + "\" {\n    }\n")
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

// Unknown legacy keys are warnings, kept in Unknown, never errors.
func TestLegacyUnknownKeysWarn(t *testing.T) {
	cs, diags := ParseFile("101.conf", []byte("ONBOOT=yes\nKMEMSIZE=\"1:2\"\n"), DefaultPaths(), nil, ParseOptions{})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if len(diags) != 1 || diags[0].Severity != SeverityWarning || diags[0].Pos.Line != 2 || !strings.Contains(diags[0].Message, "KMEMSIZE") {
		t.Errorf("diags = %v, want one warning for KMEMSIZE at line 2", diags)
	}
	if cs[0].Unknown["KMEMSIZE"] != "1:2" {
		t.Errorf("Unknown = %v", cs[0].Unknown)
	}
}

func TestLegacySyntax(t *testing.T) {
	src := "# comment\n  export A=1\nB='x y # not a comment'\nC=\"q\\\"uote\" # comment\nD=bare # comment\nE=\nA=2\r\nF=\"a\"#c\n"
	kvs, diags := parseLegacyKeys("f", []byte(src))
	if len(diags) != 0 {
		t.Fatal(diags)
	}
	want := map[string]string{"A": "2", "B": "x y # not a comment", "C": `q"uote`, "D": "bare", "E": "", "F": "a"}
	for k, v := range want {
		if kvs[k].Value != v {
			t.Errorf("%s = %q, want %q", k, kvs[k].Value, v)
		}
	}
	if kvs["A"].Pos.Line != 7 {
		t.Errorf("A at line %d, want 7 (last wins)", kvs["A"].Pos.Line)
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		in    string
		plain uint64
		want  uint64
	}{
		{"512M", 1, 512 << 20}, {"1.5G", 1, 3 << 29}, {"10GiB", 1, 10 << 30}, {"10GB", 1, 10 << 30},
		{"4096", 1, 4096}, {"131072", 4096, 512 << 20}, {"2K", 4096, 2048}, {"1t", 1, 1 << 40},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in, tt.plain)
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if back, err := parseSize(formatSize(got), 1); err != nil || back != got {
			t.Errorf("formatSize(%d) = %q does not round trip", got, formatSize(got))
		}
	}
	for _, bad := range []string{"", "M", "0i", "1iB", "1bB", "1KK", "1 G B", "1X", "-1G", "1.2.3G", "99999999999999999999", "20000P", "NaN", "1e3G"} {
		if _, err := parseSize(bad, 1); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}

func TestLegacyEmptyValuesAreUnset(t *testing.T) {
	c := parseOne(t, "101.conf", "CPUUNITS=\"\"\nPHYSPAGES=\"\"\nDISKSPACE=\"\"\nIP_ADDRESS=\"\"\nONBOOT=\"\"\nLOCAL_UID=\"\"\n", nil)
	if c.CPU.Units != DefaultCPUUnits || c.Memory.RAM != 0 || c.Disk.Size != 0 || len(c.Network.Interfaces) != 0 {
		t.Errorf("%+v", c)
	}
}

func TestNULPosition(t *testing.T) {
	p := nulPos("f", []byte("ab\ncd\x00"))
	if p.Line != 2 || p.Column != 3 {
		t.Errorf("%v", p)
	}
	p = nulPos("f", []byte("\x00"))
	if p.Line != 1 || p.Column != 1 {
		t.Errorf("%v", p)
	}
}
