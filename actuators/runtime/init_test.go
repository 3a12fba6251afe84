package runtime

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// ops renders a program one op per line, tokens separated by spaces.
func ops(p program) []string {
	var out []string
	for _, op := range p {
		out = append(out, strings.Join(op, " "))
	}
	return out
}

func indexOf(lines []string, prefix string) int {
	return slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func TestInitProgramOrder(t *testing.T) {
	l := &launch{Hostname: "web01", Init: []string{"/sbin/init", "--x"}, Console: "/dev/pts/7",
		Sysctl: map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"}}
	p, err := initProgram(l)
	if err != nil {
		t.Fatal(err)
	}
	lines := ops(p)
	// The cgroup namespace is made first, in the container's cgroup; the
	// root is attached before anything is mounted in it; the pivot comes
	// after every mount and before the capability drops; exec is last.
	order := []string{"unshare ", "mount  / ", "mount vzd /tmp tmpfs", "attach /tmp/root", "mount proc /tmp/root/proc proc",
		"mount sysfs /tmp/root/sys sysfs", "mount /dev/pts/7 /tmp/root/dev/console", "hostname web01",
		"write /tmp/root/proc/sys/kernel/shmmax 1000", "write /tmp/root/proc/sys/net/ipv4/ip_forward 1", "pivot /tmp/root", "capdrop ", "exec 2 /sbin/init --x"}
	last := -1
	for _, o := range order {
		i := indexOf(lines, o)
		if i <= last {
			t.Fatalf("op %q at %d, want after %d:\n%s", o, i, last, strings.Join(lines, "\n"))
		}
		last = i
	}
	if last != len(lines)-1 {
		t.Errorf("exec is not the last op")
	}
	if indexOf(lines, "mount tmpfs /tmp/root/sys/fs/cgroup") >= 0 || indexOf(lines, "mount /dev/null /tmp/root/proc") >= 0 {
		t.Errorf("cgroup mounts or /proc masks for an unprivileged busybox:\n%s", strings.Join(lines, "\n"))
	}
	// The wire format: every token NUL-terminated.
	if b := p.encode(); !bytes.HasSuffix(b, []byte("/sbin/init\x00--x\x00")) || bytes.Count(b, []byte{0}) != countTokens(p) {
		t.Errorf("encoding: %q", b)
	}
}

func countTokens(p program) int {
	n := 0
	for _, op := range p {
		n += len(op)
	}
	return n
}

func TestInitProgramPrivilegedAndSystemd(t *testing.T) {
	l := &launch{Hostname: "h", Init: []string{"/sbin/init"}, Privileged: true, Systemd: true,
		CgroupDirs: []string{"/sys/fs/cgroup/memory/vzd/h", "/sys/fs/cgroup/systemd/vzd/h", "/sys/fs/cgroup/unified/vzd/h"}}
	p, err := initProgram(l)
	if err != nil {
		t.Fatal(err)
	}
	lines := ops(p)
	pivot := indexOf(lines, "pivot ")
	for _, want := range []string{"mount tmpfs /tmp/root/tmp tmpfs", "mount tmpfs /tmp/root/sys/fs/cgroup tmpfs"} {
		if i := indexOf(lines, want); i < 0 || i > pivot {
			t.Errorf("no %q before the pivot:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if indexOf(lines, "mount cgroup /tmp/root/sys/fs/cgroup/memory cgroup") < 0 && indexOf(lines, "mount cgroup2") < 0 {
		t.Errorf("no cgroup mounts for systemd:\n%s", strings.Join(lines, "\n"))
	}
	if indexOf(lines, "mount cgroup /tmp/root/sys/fs/cgroup/unified") >= 0 {
		t.Errorf("the controller-less cgroup2 mounted as v1")
	}
	if i := indexOf(lines, "mount /tmp/root/proc/sys /tmp/root/proc/sys"); i < 0 || i > pivot {
		t.Errorf("/proc/sys not made read-only before the pivot:\n%s", strings.Join(lines, "\n"))
	}
}

func TestInitProgramRejectsBadSysctl(t *testing.T) {
	for _, k := range []string{"../../etc/passwd", "net/../../x", "", "a\x00b"} {
		if _, err := initProgram(&launch{Hostname: "h", Init: []string{"/sbin/init"}, Sysctl: map[string]string{k: "1"}}); err == nil {
			t.Errorf("sysctl %q accepted", k)
		}
	}
	if _, err := initProgram(&launch{Hostname: "h"}); err == nil {
		t.Error("a program without init")
	}
}
