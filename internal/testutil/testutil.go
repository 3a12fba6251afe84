// Package testutil holds helpers shared by vzd's tests: probes that skip a
// test when the machine lacks what it needs (or fail it when
// VZD_TEST_PRIVILEGED=1 says the machine must have it) and unique names.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// mustHave turns a skip into a failure when VZD_TEST_PRIVILEGED=1: CI sets
// it so that a privileged test never passes by silently skipping.
func mustHave(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("VZD_TEST_PRIVILEGED") == "1" {
		t.Fatalf("VZD_TEST_PRIVILEGED=1 but %s", msg)
	}
	t.Skip(msg)
}

// RequireRoot skips unless: the test runs as uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		mustHave(t, "test needs root")
	}
}

// RequireTool skips unless: the named program is on PATH.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		mustHave(t, "test needs %s on PATH", name)
	}
}

// RequireLoop skips unless: root, and /dev/loop-control exists.
func RequireLoop(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		mustHave(t, "test needs /dev/loop-control: %v", err)
	}
}

// RequireCgroupV1 skips unless: root, and the named v1 controllers are mounted
// under /sys/fs/cgroup.
func RequireCgroupV1(t testing.TB, controllers ...string) {
	t.Helper()
	RequireRoot(t)
	for _, c := range controllers {
		if _, err := os.Stat("/sys/fs/cgroup/" + c + "/cgroup.procs"); err != nil {
			mustHave(t, "test needs the cgroup v1 %s controller: %v", c, err)
		}
	}
}

var seq atomic.Int64

// UniqueName returns a short name that no other test of this run or of a
// concurrent run uses: prefix, pid and a counter. It stays within 15
// characters when prefix is at most 4, so it fits a network interface name.
func UniqueName(prefix string) string {
	n := seq.Add(1)
	s := fmt.Sprintf("%s%x%x", prefix, os.Getpid()%0xffff, (time.Now().UnixNano()/1e6+n)%0xffff)
	return strings.ToLower(s)
}
