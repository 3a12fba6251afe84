package systemd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// listen makes a unixgram socket in a temp dir and points NOTIFY_SOCKET
// at it, as systemd does for a Type=notify service.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

// recv reads one datagram, failing after 5 s.
func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	c := listen(t)
	for _, tt := range []struct {
		name string
		send func() error
		want string
	}{
		{"ready", Ready, "READY=1"},
		{"stopping", Stopping, "STOPPING=1"},
		{"status", func() error { return Status("running %d, pending %d, failed %d", 3, 1, 0) }, "STATUS=running 3, pending 1, failed 0"},
	} {
		if err := tt.send(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := recv(t, c); got != tt.want {
			t.Errorf("%s sent %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	c := listen(t)
	before := monotonicUsec()
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec()
	lines := strings.Split(recv(t, c), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("Reloading sent %q", lines)
	}
	us, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || us < before || us > after {
		t.Errorf("MONOTONIC_USEC=%d (%v), want within [%d, %d]", us, err, before, after)
	}
}

func TestNoSocketIsNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for _, f := range []func() error{Ready, Stopping, Reloading, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v", err)
		}
	}
	// A socket nobody listens on is an error the caller may log.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := Ready(); err == nil || !strings.Contains(err.Error(), `sd_notify "READY=1"`) {
		t.Errorf("Ready to a missing socket = %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tt := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"30000000", pid, 30 * time.Second, true},
		{"30000000", "", 30 * time.Second, true},
		{"30000000", "1", 0, false}, // meant for another process
		{"", "", 0, false},
		{"junk", pid, 0, false},
	} {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		d, ok := WatchdogInterval()
		if d != tt.want || ok != tt.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, %v", tt.usec, tt.pid, d, ok, tt.want, tt.ok)
		}
	}
}

// TestWatchdogPingsOnlyOnProgress runs the watchdog in fake time: pings
// come every half interval while the loop beats and stop when it hangs.
func TestWatchdogPingsOnlyOnProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var pings []time.Duration
		start := time.Now()
		w := NewWatchdog(10 * time.Second)
		w.send = func(s string) error {
			if s != "WATCHDOG=1" {
				t.Errorf("watchdog sent %q", s)
			}
			mu.Lock()
			pings = append(pings, time.Since(start))
			mu.Unlock()
			return nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- w.Run(ctx) }()

		// A loop that makes progress every second for 20 s, then hangs.
		for range 20 {
			w.Beat()
			time.Sleep(time.Second)
		}
		time.Sleep(30 * time.Second) // hung: no Beat
		synctest.Wait()
		mu.Lock()
		got := append([]time.Duration(nil), pings...)
		mu.Unlock()
		want := []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 20 * time.Second}
		if len(got) != len(want) {
			t.Fatalf("pings at %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("ping %d at %v, want %v", i, got[i], want[i])
			}
		}
		// Progress resumes: so do the pings.
		w.Beat()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mu.Lock()
		if len(pings) != 5 {
			t.Errorf("after a new beat: %d pings, want 5", len(pings))
		}
		mu.Unlock()
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

func TestWatchdogDisabled(t *testing.T) {
	w := NewWatchdog(0)
	w.Beat()
	if err := w.Run(t.Context()); err != nil {
		t.Errorf("disabled Run = %v", err)
	}
}

// TestWatchdogOverSocket checks the real send path once.
func TestWatchdogOverSocket(t *testing.T) {
	c := listen(t)
	w := NewWatchdog(20 * time.Millisecond)
	w.Beat()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.Run(ctx)
	if got := recv(t, c); got != "WATCHDOG=1" {
		t.Errorf("watchdog sent %q", got)
	}
}

// TestWatchdogIdleLoopWithUnitSettings: with the unit's WatchdogSec=30s
// and an idle loop that beats from its 5 s heartbeat (reconciler.Run), no
// gap between pings reaches 30 s (systemd would restart the agent), for
// 10 minutes of fake time.
func TestWatchdogIdleLoopWithUnitSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const watchdogSec, heartbeat = 30 * time.Second, 5 * time.Second
		var mu sync.Mutex
		last, worst := time.Now(), time.Duration(0)
		w := NewWatchdog(watchdogSec)
		w.send = func(string) error {
			mu.Lock()
			defer mu.Unlock()
			worst = max(worst, time.Since(last))
			last = time.Now()
			return nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go w.Run(ctx)
		for range 120 {
			w.Beat()
			time.Sleep(heartbeat)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if worst >= watchdogSec {
			t.Errorf("longest gap between pings %v, systemd restarts at %v", worst, watchdogSec)
		}
		t.Logf("longest gap between pings: %v", worst)
	})
}
