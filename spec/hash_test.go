package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func parseOne(t *testing.T, file, src string, g *Global) *Container {
	t.Helper()
	cs, diags := ParseFile(file, []byte(src), DefaultPaths(), g, ParseOptions{})
	if diags.HasErrors() || len(cs) != 1 {
		t.Fatalf("%s: %d containers: %v", file, len(cs), diags.Err())
	}
	return cs[0]
}

// Rewriting a file without changing its meaning keeps the hash.
func TestHashIgnoresFormatting(t *testing.T) {
	a := parseOne(t, "a.hcl", `
container "web" {
  memory { ram = "1G" }
  sysctl = { "net.ipv4.ip_forward" = "1", "net.core.somaxconn" = "512" }
  templates = []
  network {
    interface "eth0" { ip = ["192.0.2.1/32"] }
  }
}`, nil)
	b := parseOne(t, "b.hcl", `# a comment
container "web" {
  network {
    interface "eth0" {
      ip = "192.0.2.1"   # bare address: a /32
    }
  }
  sysctl = {
    "net.core.somaxconn"  = 512
    "net.ipv4.ip_forward" = 1
  }
  memory {
    ram = 1073741824
  }
  cpu { units = 1000 }
  stop_timeout = "1m"
  state = "running"
}`, nil)
	if a.Hash() != b.Hash() {
		t.Errorf("same meaning, different hashes:\n%s\n%s", a.Hash(), b.Hash())
	}
	if !strings.HasPrefix(a.Hash(), HashSchema+":") || len(a.Hash()) != len(HashSchema)+1+64 {
		t.Errorf("hash %q is not %s:<sha256 hex>", a.Hash(), HashSchema)
	}
	c := parseOne(t, "c.hcl", `container "web" {
  memory { ram = "2G" }
  sysctl = { "net.ipv4.ip_forward" = "1", "net.core.somaxconn" = "512" }
  network {
    interface "eth0" { ip = ["192.0.2.1/32"] }
  }
}`, nil)
	if c.Hash() == a.Hash() {
		t.Errorf("different RAM, same hash")
	}
}

func TestHashSameAcrossFormats(t *testing.T) {
	legacy := parseOne(t, "/etc/vz/conf/101.conf", `
PHYSPAGES="0:262144"
SWAPPAGES="0:512M"
CPUS=2
CPULIMIT=150
IP_ADDRESS="192.0.2.5"
HOSTNAME=ct101.example.com
NAMESERVER=inherit
OSTEMPLATE=.debian-12-x86_64
`, nil)
	hcl := parseOne(t, "/etc/vz/conf/ct.hcl", `
container "101" {
  hostname   = "ct101.example.com"
  ostemplate = "debian-12-x86_64"
  cpu {
    count = 2
    limit = "150%"
  }
  memory {
    ram  = "1G"
    swap = "512M"
  }
  network {
    nameservers = "inherit"
    interface "venet0" { ip = ["192.0.2.5/32"] }
  }
}`, nil)
	if legacy.Hash() != hcl.Hash() {
		t.Errorf("legacy and HCL of the same container hash differently")
	}
}

// Converting a legacy file to HCL and parsing that gives the same spec.
func TestConvertRoundTrip(t *testing.T) {
	var files []string
	for _, pat := range []string{"testdata/golden/*.conf", "../examples/*.conf", "testdata/compat/*/*.conf-sample", "../examples/*.hcl"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	converted := 0
	defer func() {
		if converted < 20 {
			t.Errorf("only %d files converted", converted)
		}
	}()
	for _, globalFile := range []string{"", "../examples/vz.conf", "testdata/compat/openvz-legacy/vz.conf"} {
		var g *Global
		if globalFile != "" {
			var err error
			g, _, err = LoadGlobal(globalFile)
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range files {
			if filepath.Base(f) == "defaults.hcl" {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p := Paths{Prefix: "/tmp/vzd-prefix", ConfigDir: "/etc/vz/conf"}
			cs, diags := ParseFile(f, data, p, g, ParseOptions{ID: "101"})
			if diags.HasErrors() {
				continue // bad inputs of testdata/golden
			}
			if len(cs) == 0 {
				t.Fatalf("%s: no containers", f)
			}
			converted++
			out := WriteHCL(cs, p, g)
			back, diags := ParseFile("converted.hcl", out, p, g, ParseOptions{Format: FormatHCL})
			if diags.HasErrors() || len(back) != len(cs) {
				t.Fatalf("%s (global %q): converted file does not parse: %v\n%s", f, globalFile, diags.Err(), out)
			}
			for i := range cs {
				if cs[i].Hash() != back[i].Hash() {
					t.Errorf("%s (global %q): hash changed by conversion\n%s", f, globalFile, out)
				}
			}
		}
	}
}

func TestQuoteHCL(t *testing.T) {
	for _, s := range []string{"plain", `quo"te`, `back\slash`, "new\nline", "${var}", "%{if}", "tab\there", "\x01ctl", "ünïcode", "$$", "a$"} {
		src := "container \"x\" {\n  description = " + quoteHCL(s) + "\n}\n"
		c := parseOne(t, "q.hcl", src, nil)
		if c.Description != s {
			t.Errorf("quoteHCL(%q) decodes to %q", s, c.Description)
		}
	}
}

func TestHCLGlobalDefaultsApplyToLegacy(t *testing.T) {
	g, diags := ParseGlobalHCL("g.hcl", []byte("defaults {\n  onboot = true\n  memory {\n    ram = \"2G\"\n  }\n}\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	c := parseOne(t, "101.conf", "ONBOOT=no\n", g)
	if c.OnBoot || c.Memory.RAM != 2<<30 {
		t.Errorf("onboot %v ram %d; want the file's onboot and the default ram", c.OnBoot, c.Memory.RAM)
	}
	back := parseOne(t, "101.hcl", string(WriteHCL([]*Container{c}, DefaultPaths(), g)), g)
	if back.Hash() != c.Hash() {
		t.Errorf("round trip under an HCL global changed the hash")
	}
}

// A container that overrides global defaults with zero values keeps them
// through conversion.
func TestConvertUnderDefaultsKeepsZeroes(t *testing.T) {
	g, diags := ParseGlobalHCL("g.hcl", []byte(`defaults {
  privileged = true
  restart_to_apply = true
  description = "default"
  ostemplate = "debian-12-x86_64"
  templates = ["nginx"]
  processes = 100
  sysctl = { "net.core.somaxconn" = "1" }
  devices = ["/dev/fuse"]
  stop_timeout = "5s"
  init = ["/bin/sh"]
  root = "/vz/root/x-$VEID"
  private = "/vz/private/x-$VEID"
  uid_base = 5
  gid_base = 5
  dedup = false
  cpu {
    count = 2
    limit = 50
    units = 10
    mask = "0"
  }
  memory {
    ram = "1G"
    swap = "1G"
  }
  disk {
    size = "1G"
    inodes = 2000
    iops_limit = 5
    io_limit = "1M"
  }
  network {
    nameservers = ["192.0.2.1"]
    search_domains = ["example.com"]
  }
}`))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	zero := parseOne(t, "a.hcl", `container "a" {
  privileged = false
  restart_to_apply = false
  description = ""
  ostemplate = ""
  templates = []
  processes = 0
  sysctl = {}
  devices = []
  stop_timeout = "60s"
  init = "/sbin/init"
  root = "/vz/root/a"
  private = "/vz/private/a"
  uid_base = 0
  gid_base = 0
  dedup = true
  cpu {
    count = 0
    limit = 0
    units = 1000
    mask = ""
  }
  memory {
    ram = "unlimited"
    swap = 0
  }
  disk {
    size = "unlimited"
    inodes = 0
    iops_limit = 0
    io_limit = 0
  }
  network {
    nameservers = []
    search_domains = []
  }
}`, g)
	plain := parseOne(t, "a.hcl", "container \"a\" {\n}\n", nil)
	if zero.Hash() != plain.Hash() {
		t.Fatalf("explicit zeroes under defaults differ from no defaults: %+v", zero)
	}
	out := WriteHCL([]*Container{zero}, DefaultPaths(), g)
	back := parseOne(t, "back.hcl", string(out), g)
	if back.Hash() != zero.Hash() {
		t.Errorf("conversion lost explicit zeroes:\n%s", out)
	}
	full := parseOne(t, "b.hcl", "container \"b\" {\n}\n", g)
	back = parseOne(t, "back.hcl", string(WriteHCL([]*Container{full}, DefaultPaths(), nil)), nil)
	if back.Hash() != full.Hash() {
		t.Errorf("defaults lost when converting for no global")
	}
}
