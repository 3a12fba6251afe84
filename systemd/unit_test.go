package systemd

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vzd/internal/testutil"
)

// unitKeys parses vzd.service into section.key → values.
func unitKeys(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("vzd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("vzd.service: bad line %q", line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

func TestUnitDirectives(t *testing.T) {
	keys := unitKeys(t)
	for k, want := range map[string]string{
		"Service.Type":             "notify",
		"Service.NotifyAccess":     "main",
		"Service.ExecStart":        "/usr/local/bin/vzd agent",
		"Service.ExecReload":       "/bin/kill -HUP $MAINPID",
		"Service.KillMode":         "process",
		"Service.Delegate":         "yes",
		"Service.Restart":          "on-failure",
		"Service.WatchdogSec":      "30s",
		"Service.RuntimeDirectory": "vzd",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(keys["Service.TimeoutStopSec"]) != 1 {
		t.Error("no TimeoutStopSec")
	}
}

// TestUnitVerifies runs systemd-analyze verify on a copy of the unit whose
// ExecStart points at a binary that exists (verify checks that), failing
// on any warning too: verify exits 0 on unknown keys and bad values.
func TestUnitVerifies(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	b, err := os.ReadFile("vzd.service")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "vzd.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/vzd", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
