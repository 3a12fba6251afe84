package cgroups

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of the polling in Kill. ctx may end it sooner.
const (
	freezeWait = 2 * time.Second  // for a freeze to complete
	killWait   = 10 * time.Second // for the cgroup to empty
	pollEvery  = 10 * time.Millisecond
)

// killer is what killCgroup needs from a driver.
type killer struct {
	name   string                // for messages
	procs  func() ([]int, error) // pids of the cgroup, all hierarchies
	freeze func() error          // start freezing; nil when there is no freezer
	frozen func() (bool, error)  // whether the freeze completed
	thaw   func() error          // undo freeze
	kill   func() (bool, error)  // kernel-side kill (cgroup.kill); false when absent
}

// killCgroup empties a cgroup: freeze it so that no process can fork while
// the pids are read and signalled (a frozen task keeps the SIGKILL pending
// and dies as soon as it is thawed, without running user code), SIGKILL
// every pid, thaw, then poll until the cgroup is empty, re-killing
// whatever is still listed (a task that was mid-fork when the freeze
// began). Where the kernel offers cgroup.kill (v2, 5.14+) it does all of
// that atomically and only the wait remains.
func killCgroup(ctx context.Context, k killer) (retErr error) {
	done := false
	if k.kill != nil {
		var err error
		if done, err = k.kill(); err != nil {
			return err
		}
	}
	thawed := true
	if !done && k.freeze != nil {
		if err := k.freeze(); err != nil {
			return err
		}
		thawed = false
		// Never leave the cgroup frozen, whatever fails below.
		defer func() {
			if !thawed {
				retErr = errors.Join(retErr, k.thaw())
			}
		}()
		// A freeze can stall on a task in uninterruptible sleep; signal
		// anyway after the bound, the wait below catches stragglers.
		deadline := time.Now().Add(freezeWait)
		for time.Now().Before(deadline) {
			ok, err := k.frozen()
			if err != nil || ok {
				break
			}
			if err := sleepCtx(ctx, pollEvery); err != nil {
				return fmt.Errorf("kill %s: %w", k.name, err)
			}
		}
	}
	if !done {
		if err := signalAll(k); err != nil {
			return err
		}
		if !thawed {
			thawed = true
			if err := k.thaw(); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(killWait)
	for {
		pids, err := k.procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill %s: %d processes remain (first %d)", k.name, len(pids), pids[0])
		}
		if err := sleepCtx(ctx, pollEvery); err != nil {
			return fmt.Errorf("kill %s: %d processes remain: %w", k.name, len(pids), err)
		}
		if !done {
			if err := signalAll(k); err != nil {
				return err
			}
		}
	}
}

func signalAll(k killer) error {
	pids, err := k.procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		// ESRCH: it exited meanwhile, which is the goal.
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %s: signal pid %d: %w", k.name, pid, err)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
