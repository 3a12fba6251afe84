package runtime

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"vzd/internal/procfs"
)

// initAlive answers like alive() (by pid and start time, a zombie is
// dead) while keeping a pidfd between calls.
func TestInitAlive(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		forgetInit("t-alive")
		forgetInit("t-other")
	})
	pid := cmd.Process.Pid
	start, _, err := procfs.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // first by /proc, then through the kept pidfd
		if !initAlive("t-alive", pid, start) {
			t.Fatalf("call %d: a live process reported dead", i)
		}
	}
	handlesMu.Lock()
	_, kept := handles["t-alive"]
	handlesMu.Unlock()
	if !kept {
		t.Fatal("no pidfd kept for a live init")
	}
	if initAlive("t-other", pid, start+1) {
		t.Fatal("another start time (a reused pid) reported alive")
	}
	// A zombie is dead: killed, not yet reaped.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for initAlive("t-alive", pid, start) {
		if time.Now().After(deadline) {
			t.Fatal("a killed (zombie) init still reported alive after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	handlesMu.Lock()
	_, kept = handles["t-alive"]
	handlesMu.Unlock()
	if kept {
		t.Fatal("the pidfd of a dead init was kept")
	}
	_ = cmd.Wait()
	reaped = true
	if initAlive("t-alive", pid, start) {
		t.Fatal("a reaped init reported alive")
	}
}
