package templates

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"vzd/internal/testutil"
	"vzd/spec"
)

// DebianCachePrefix is where the Debian tests keep their node prefix, so
// that the slow debootstrap runs once and later runs reuse it.
const DebianCachePrefix = "/var/tmp/vzd-debian-cache"

func requireDebian(t *testing.T) {
	t.Helper()
	if os.Getenv("VZD_TEST_DEBIAN") != "1" {
		t.Skip("set VZD_TEST_DEBIAN=1 to build the Debian template (minutes, downloads from the mirror)")
	}
	requireBuild(t)
	testutil.RequireTool(t, "debootstrap")
}

func TestDebianBuild(t *testing.T) {
	requireDebian(t)
	c := NewCache(spec.Paths{Prefix: DebianCachePrefix}, nil)
	in, err := c.Build(t.Context(), "debian-12-x86_64", false, NewProgress(tWriter{t}))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debian-12 cache: %s, %d MiB image, %d MiB tree, %d files", in.Path, in.Size>>20, in.TreeBytes>>20, in.TreeFiles)
	if out, err := exec.Command("e2fsck", "-fn", in.Path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	if out := debugfs(t, in.Path, "stat /root/lib/systemd/systemd"); !strings.Contains(out, "Type: regular") {
		t.Errorf("no systemd in the image:\n%s", out)
	}
	if out := debugfs(t, in.Path, "stat /root/sbin/init"); !strings.Contains(out, "Type: symlink") {
		t.Errorf("/sbin/init is not systemd-sysv's symlink:\n%s", out)
	}
	status := debugfs(t, in.Path, "cat /root/var/lib/dpkg/status")
	for _, pkg := range []string{"systemd", "systemd-sysv", "dbus", "iproute2"} {
		if !strings.Contains(status, "\nPackage: "+pkg+"\n") {
			t.Errorf("package %s not installed", pkg)
		}
	}
	// The first boot must make its own machine id.
	if out := debugfs(t, in.Path, "stat /root/etc/machine-id"); !strings.Contains(out, "Size: 0") {
		t.Errorf("machine-id not empty:\n%s", out)
	}
	// File capabilities survive mkfs.ext4 -d (ping has cap_net_raw).
	if out := debugfs(t, in.Path, "ea_list /root/bin/ping"); !strings.Contains(out, "security.capability") {
		t.Errorf("ping lost its file capability:\n%s", out)
	}
}

func TestDebianFetchApp(t *testing.T) {
	requireDebian(t)
	c := NewCache(spec.Paths{Prefix: DebianCachePrefix}, nil)
	in, err := c.Build(t.Context(), "debian-12-x86_64", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	status := debugfs(t, in.Path, "cat /root/var/lib/dpkg/status")
	app, _ := c.AppLookup("nginx")
	debs, err := c.FetchApp(t.Context(), app, "debian-12-x86_64", []byte(status))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range debs {
		names[d.Package] = true
		if _, err := os.Stat(d.Path); err != nil {
			t.Error(err)
		}
	}
	if !names["nginx-light"] || !names["nginx-common"] {
		t.Errorf("debs = %+v", debs)
	}
	// Dependencies the OS already has are not fetched.
	if names["libc6"] || names["systemd"] {
		t.Errorf("fetched packages the OS has: %+v", debs)
	}
	// The second fetch reuses the files.
	again, err := c.FetchApp(t.Context(), app, "debian-12-x86_64", []byte(status))
	if err != nil || len(again) != len(debs) {
		t.Errorf("second FetchApp = %d debs, %v", len(again), err)
	}
	if _, err := c.FetchApp(t.Context(), app, "busybox", []byte(status)); err == nil {
		t.Error("FetchApp for busybox succeeded")
	}
}
