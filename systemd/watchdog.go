package systemd

import (
	"context"
	"sync/atomic"
	"time"
)

// Watchdog sends WATCHDOG=1 on behalf of a loop, and only while the loop
// makes progress: the loop calls Beat each time it does something (a pass,
// a step, an idle wake-up), and Run sends a ping every half interval only
// if Beat was called since the previous ping. A loop that hangs stops
// calling Beat, the pings stop, and systemd restarts the agent after
// WatchdogSec=, which a plain timer pinging on its own would never let
// happen (kubelet's syncLoopMonitor follows the same idea).
//
// The loop must therefore Beat at least once per half interval even when
// there is nothing to do, e.g. from its resync timer or an idle tick.
type Watchdog struct {
	interval time.Duration
	beat     atomic.Bool
	send     func(string) error // notify; replaced in tests
}

// NewWatchdog returns a watchdog for the given WatchdogSec= interval
// (WatchdogInterval). With interval <= 0 it is disabled: Beat is a cheap
// no-op and Run returns at once, so callers need not branch.
func NewWatchdog(interval time.Duration) *Watchdog {
	return &Watchdog{interval: interval, send: notify}
}

// Beat records progress. Safe to call from any goroutine, as often as
// wanted.
func (w *Watchdog) Beat() {
	if w.interval > 0 {
		w.beat.Store(true)
	}
}

// Run pings systemd every interval/2 while beats arrive, until ctx ends.
// It returns ctx's error (nil when disabled). A failed send is not fatal:
// the next tick tries again, and if pings keep failing systemd acts as for
// a hung loop, which is right.
func (w *Watchdog) Run(ctx context.Context) error {
	if w.interval <= 0 {
		return nil
	}
	t := time.NewTicker(w.interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if w.beat.Swap(false) {
				_ = w.send("WATCHDOG=1")
			}
		}
	}
}
