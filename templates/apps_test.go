package templates

import (
	"reflect"
	"testing"
)

func TestParseInst(t *testing.T) {
	out := []byte(`NOTE: This is only a simulation!
Inst nginx-common (1.22.1-9+deb12u1 Debian:12.10/stable [all])
Inst libfoo [1.0-1] (2:1.0-2 Debian-Security:12/stable-security [amd64])
Conf nginx-common (1.22.1-9+deb12u1 Debian:12.10/stable [all])
Inst broken-line
`)
	got := parseInst(out)
	want := []inst{{"nginx-common", "1.22.1-9+deb12u1", "all"}, {"libfoo", "2:1.0-2", "amd64"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseInst = %+v, want %+v", got, want)
	}
	if f := got[1].file(); f != "libfoo_2%3a1.0-2_amd64.deb" {
		t.Errorf("file() = %q", f)
	}
	if f := got[0].file(); f != "nginx-common_1.22.1-9+deb12u1_all.deb" {
		t.Errorf("file() = %q", f)
	}
}

func TestInstalledPackages(t *testing.T) {
	status := []byte(`Package: base-files
Status: install ok installed
Version: 12.4

Package: nginx-light
Status: install ok half-configured
Version: 1

Package: gone
Status: deinstall ok config-files

Package: old
Status: purge ok not-installed
`)
	inst, broken := InstalledPackages(status)
	if !reflect.DeepEqual(inst, []string{"base-files"}) {
		t.Errorf("installed = %v", inst)
	}
	if !reflect.DeepEqual(broken, map[string]string{"nginx-light": "install ok half-configured"}) {
		t.Errorf("broken = %v", broken)
	}
}
