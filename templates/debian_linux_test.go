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
