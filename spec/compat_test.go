package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files of testdata/compat are public OpenVZ samples (see its
// README.md); vzd must accept every one of them with the values vzctl
// gives them.

func loadCompatGlobal(t *testing.T, dir string) *Global {
	t.Helper()
	file := filepath.Join("testdata/compat", dir, "vz.conf")
	g, diags, err := LoadGlobal(file)
	if err != nil {
		t.Fatal(err)
	}
	if diags.HasErrors() {
		t.Fatalf("%s: %v", file, diags.Err())
	}
	return g
}

func parseCompat(t *testing.T, dir, sample, id string) *Container {
	t.Helper()
	g := loadCompatGlobal(t, dir)
	file := filepath.Join("testdata/compat", dir, sample)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cs, diags := ParseFile(file, data, DefaultPaths(), g, ParseOptions{Format: FormatLegacy, ID: id})
	if diags.HasErrors() {
		t.Fatalf("%s: %v", file, diags.Err())
	}
	for _, d := range diags {
		if d.Pos.Line == 0 {
			t.Errorf("%s: diagnostic without a line: %v", file, d)
		}
	}
	return cs[0]
}

func TestCompatEverySampleParses(t *testing.T) {
	for _, dir := range []string{"vz7", "openvz-legacy"} {
		samples, _ := filepath.Glob(filepath.Join("testdata/compat", dir, "*.conf-sample"))
		samples = append(samples, filepath.Join("testdata/compat", dir, "0.conf"))
		if len(samples) < 4 {
			t.Fatalf("%s: only %d samples", dir, len(samples))
		}
		for _, s := range samples {
			t.Run(dir+"/"+filepath.Base(s), func(t *testing.T) {
				c := parseCompat(t, dir, filepath.Base(s), "101")
				if c.Root != "/vz/root/101" || c.Private != "/vz/private/101" {
					t.Errorf("root %s private %s, want $VEID expanded", c.Root, c.Private)
				}
			})
		}
	}
}

func TestCompatValues(t *testing.T) {
	tests := []struct {
		dir, sample string
		check       func(t *testing.T, c *Container)
	}{
		{"vz7", "ve-basic.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "ram", c.Memory.RAM, 512*MiB)    // PHYSPAGES="131072:131072"
			eq(t, "disk", c.Disk.Size, 10*GiB)     // DISKSPACE="10485760:10485760"
			eq(t, "inodes", c.Disk.Inodes, 655360) // DISKINODES
			eq(t, "swap", c.Memory.Swap, 0)
			eq(t, "onboot", c.OnBoot, true)
			eq(t, "interfaces", len(c.Network.Interfaces), 0) // IP_ADDRESS="0.0.0.0"
			eq(t, "ostemplate", c.OSTemplate, "almalinux-9")  // DEF_OSTEMPLATE=".almalinux-9"
			if c.Unknown["PLATFORM"] != "linux" {
				t.Errorf("unknown keys not kept: %v", c.Unknown)
			}
			if _, ok := c.Unknown["NETFILTER"]; !ok {
				t.Errorf("NETFILTER not kept in Unknown")
			}
		}},
		{"vz7", "ve-vswap.256MB.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "ram", c.Memory.RAM, 256*MiB)
		}},
		{"vz7", "ve-light.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "ram", c.Memory.RAM, 0) // PHYSPAGES="0:2147483647": LONG_MAX is unlimited
			eq(t, "disk", c.Disk.Size, 200*MiB)
			eq(t, "units", c.CPU.Units, 250)
			eq(t, "processes", c.Processes, 40)
		}},
		{"openvz-legacy", "ve-vswap-256m.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "ram", c.Memory.RAM, 256*MiB) // PHYSPAGES="0:256M"
			eq(t, "swap", c.Memory.Swap, 512*MiB)
			eq(t, "nameserver inherit", c.Network.NameserverInherit, true) // NAMESERVER=inherit # comment
			eq(t, "uid base", c.UIDBase, 100000)
			eq(t, "gid base", c.GIDBase, 100000)
		}},
		{"openvz-legacy", "ve-basic.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "disk", c.Disk.Size, uint64(2362232012)) // 2.2 × 2^30, rounded down // DISKSPACE="2G:2.2G"
			eq(t, "ram", c.Memory.RAM, 0)                  // PHYSPAGES="0:unlimited"
			eq(t, "processes", c.Processes, 240)
			eq(t, "ostemplate", c.OSTemplate, "centos-6-x86")
		}},
		{"openvz-legacy", "ve-vswap-4g.conf-sample", func(t *testing.T, c *Container) {
			eq(t, "ram", c.Memory.RAM, 4*GiB)
			eq(t, "swap", c.Memory.Swap, 8*GiB)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.dir+"/"+tt.sample, func(t *testing.T) {
			tt.check(t, parseCompat(t, tt.dir, tt.sample, "101"))
		})
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestCompatGlobal(t *testing.T) {
	g := loadCompatGlobal(t, "openvz-legacy")
	if g.Raw["NAMESERVER"] != "inherit" {
		t.Errorf("NAMESERVER = %q, want inherit (comment stripped)", g.Raw["NAMESERVER"])
	}
	if g.Raw["VE_ROOT"] != "/vz/root/$VEID" {
		t.Errorf("VE_ROOT = %q", g.Raw["VE_ROOT"])
	}
	if !g.Dedup.Enabled {
		t.Errorf("dedup disabled by default")
	}
}

// In a config directory the samples and 0.conf are not containers.
func TestCompatDirIgnoresSamples(t *testing.T) {
	for _, dir := range []string{"vz7", "openvz-legacy"} {
		p := Paths{Prefix: "/", ConfigDir: filepath.Join("testdata/compat", dir), GlobalConfig: filepath.Join("testdata/compat", dir, "vz.conf")}
		set, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(set.Containers) != 0 {
			t.Errorf("%s: containers %v, want none", dir, set.Containers)
		}
		for path, f := range set.Files {
			if f.Ignored == "" {
				t.Errorf("%s: not ignored", path)
			}
			if strings.HasSuffix(path, "0.conf") && !strings.Contains(f.Ignored, "CT 0") {
				t.Errorf("%s: ignored as %q", path, f.Ignored)
			}
		}
	}
}

func TestGlobalPFCACHEIsNotAContainerDefault(t *testing.T) {
	g, diags := ParseGlobalLegacy("vz.conf", []byte("PFCACHE=no\n"))
	if diags.HasErrors() || g.Dedup.Enabled {
		t.Fatalf("%v %+v", diags, g.Dedup)
	}
	if c := parseOne(t, "101.conf", "ONBOOT=yes\n", g); c.NoDedup {
		t.Errorf("global PFCACHE=no opted container 101 out")
	}
	if c := parseOne(t, "101.conf", "PFCACHE=no\n", g); !c.NoDedup {
		t.Errorf("container PFCACHE=no ignored")
	}
}
