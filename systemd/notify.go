// Package systemd speaks the sd_notify protocol to the service manager
// that runs the agent (see vzd.service beside this file): READY=1 after
// the first full pass, STATUS= lines, RELOADING=1 on SIGHUP, STOPPING=1
// on exit, and a watchdog that beats only while the loop makes progress.
// Without NOTIFY_SOCKET (not started by systemd, or Type= is not notify)
// every call is a no-op that returns nil.
package systemd

import (
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// notify sends one datagram to $NOTIFY_SOCKET. go-systemd's SdNotify does
// the socket work (abstract "@" addresses included); the environment is
// left in place because the agent notifies for its whole life.
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// Ready tells systemd that startup finished (and, after Reloading, that
// the reload did).
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd that the agent is shutting down.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading tells systemd that the agent is reloading its configuration,
// with the CLOCK_MONOTONIC timestamp that Type=notify-reload requires
// (systemd 253+) and older versions ignore. Send Ready when the reload's
// pass is done.
func Reloading() error {
	return notify(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, monotonicUsec()))
}

// Status sets the one-line status "systemctl status" shows.
func Status(format string, args ...any) error {
	return notify("STATUS=" + fmt.Sprintf(format, args...))
}

// WatchdogInterval returns the WatchdogSec= of the unit when systemd
// asked this process for watchdog pings (WATCHDOG_USEC set and
// WATCHDOG_PID, if set, naming us).
func WatchdogInterval() (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0 // cannot happen on Linux; systemd then ignores the field
	}
	return ts.Nano() / 1000
}
