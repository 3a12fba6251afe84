package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Busybox paths probed, in order: Debian's busybox-static installs
// /bin/busybox.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// BusyboxInittab is the inittab BusyboxRoot writes: rcS at boot, a
// respawned idle process (so init has something to supervise), and the
// shutdown actions busybox init runs on SIGUSR2 (poweroff) or SIGTERM.
const BusyboxInittab = `::sysinit:/etc/init.d/rcS
::respawn:/bin/sleep 2147483647
::shutdown:/bin/echo vzd-test: shutting down
::ctrlaltdel:/sbin/reboot
`

// BusyboxRoot skips unless: a static busybox is installed. It populates
// dir with a minimal system root: /bin/busybox and its applet links,
// /etc/inittab and /etc/init.d/rcS, passwd and group, and the mount point
// directories. Files are owned by root (container id 0).
func BusyboxRoot(t testing.TB, dir string) {
	t.Helper()
	var bb string
	for _, p := range busyboxPaths {
		if out, err := exec.Command("file", "-L", p).Output(); err == nil && strings.Contains(string(out), "statically linked") {
			bb = p
			break
		}
	}
	if bb == "" {
		mustHave(t, "test needs a static busybox (busybox-static)")
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp", "root", "var/log", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		p := filepath.Join(dir, applet)
		if applet == "bin/busybox" || filepath.Dir(applet) == "." {
			continue
		}
		rel, _ := filepath.Rel(filepath.Dir(p), filepath.Join(dir, "bin/busybox"))
		if err := os.Symlink(rel, p); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/inittab": BusyboxInittab,
		"etc/init.d/rcS": `#!/bin/sh
mount -o remount,rw / 2>/dev/null
echo "vzd-test: rcS ran as $(id -u) in $(hostname)"
`,
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
		"etc/hostname": "busybox\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "etc/init.d/") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}
