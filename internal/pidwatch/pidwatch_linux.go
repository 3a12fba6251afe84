// Package pidwatch reports when watched processes exit, through pidfds in
// one epoll set: the agent learns that a container's init exited at once,
// not at the next periodic resync, and needs no wakeup while nothing
// happens.
package pidwatch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"vzd/internal/procfs"
)

// Watcher watches one process per key.
type Watcher struct {
	epfd, wake int
	exited     func(key string)

	mu    sync.Mutex
	byKey map[string]watch
	byFd  map[int32]string
}

type watch struct {
	fd    int
	pid   int
	start uint64
}

// New returns a Watcher that calls exited(key) from its Run goroutine when
// the process watched under key has exited.
func New(exited func(key string)) (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	return &Watcher{epfd: epfd, wake: wake, exited: exited, byKey: map[string]watch{}, byFd: map[int32]string{}}, nil
}

// Watch reports key when the process pid that started at start (clock
// ticks after boot, field 22 of /proc/PID/stat) exits. Watching the same
// process again does nothing; another process replaces key's earlier
// watch. A process that is already gone, or a pid now used by another
// process, is reported at once.
func (w *Watcher) Watch(key string, pid int, start uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.byKey[key]; ok {
		if old.pid == pid && old.start == start {
			return nil
		}
		w.forgetLocked(key)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		go w.exited(key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	// The pid may have been reused before the pidfd pinned it: the
	// pidfd is for the process that now has it, so check that one.
	if got, zombie, err := procfs.StartTime(pid); err != nil || got != start || zombie {
		unix.Close(fd)
		go w.exited(key)
		return nil
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll add pidfd: %w", err)
	}
	w.byKey[key] = watch{fd: fd, pid: pid, start: start}
	w.byFd[int32(fd)] = key
	return nil
}

// Forget stops watching key.
func (w *Watcher) Forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forgetLocked(key)
}

func (w *Watcher) forgetLocked(key string) {
	x, ok := w.byKey[key]
	if !ok {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
	unix.Close(x.fd)
	delete(w.byKey, key)
	delete(w.byFd, int32(x.fd))
}

// Len is the number of processes watched.
func (w *Watcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byKey)
}

// Run reports exits until ctx ends, then closes the Watcher.
func (w *Watcher) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(w.wake, one[:])
	})
	defer stop()
	defer w.close()
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll wait: %w", err)
		}
		var gone []string
		w.mu.Lock()
		for _, ev := range events[:n] {
			if int(ev.Fd) == w.wake {
				continue
			}
			if key, ok := w.byFd[ev.Fd]; ok {
				w.forgetLocked(key)
				gone = append(gone, key)
			}
		}
		w.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		for _, key := range gone {
			w.exited(key)
		}
	}
}

func (w *Watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.byKey {
		w.forgetLocked(key)
	}
	unix.Close(w.epfd)
	unix.Close(w.wake)
}
