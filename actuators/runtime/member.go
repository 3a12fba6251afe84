package runtime

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// memberRecheck is how long a process found in its container's cgroup is
// taken to still be there. Within one boot a pid and its start time name
// one process for good, and only a hand-made move takes it out of the
// cgroup; reading /proc/PID/cgroup of every container on every pass was
// the largest part of a status check.
const memberRecheck = time.Minute

// initHandle is a pidfd of a container's init, opened once it was seen
// alive: it stays the same process for good, and polling it (one call)
// says whether it has exited, where reading /proc/PID/stat (which the
// kernel formats field by field) was the dearest part of a status check.
type initHandle struct {
	pid      int
	start    uint64
	fd       int
	inCgroup time.Time // when it was last found in its container's cgroup
}

var (
	handlesMu sync.Mutex
	handles   = map[string]initHandle{} // by container ID
)

// inCgroupRecently is inCgroup, answered from memory when the same
// process was found in the container's cgroup less than memberRecheck ago
// (initAlive keeps the process's handle).
func (r *Runtime) inCgroupRecently(ctx context.Context, id string, pid int, start uint64) bool {
	handlesMu.Lock()
	h, ok := handles[id]
	handlesMu.Unlock()
	same := ok && h.pid == pid && h.start == start
	if same && time.Since(h.inCgroup) < memberRecheck {
		return true
	}
	in := r.inCgroup(ctx, id, pid)
	if same {
		handlesMu.Lock()
		if h, ok := handles[id]; ok && h.pid == pid && h.start == start {
			h.inCgroup = time.Time{}
			if in {
				h.inCgroup = time.Now()
			}
			handles[id] = h
		}
		handlesMu.Unlock()
	}
	return in
}

// initAlive is alive(pid, start) for the init of container id, answered
// through a pidfd kept from an earlier call when it names the same process.
func initAlive(id string, pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	handlesMu.Lock()
	h, ok := handles[id]
	handlesMu.Unlock()
	if ok && h.pid == pid && h.start == start {
		gone, err := exited(h.fd)
		if err != nil {
			return alive(pid, start) // never call a live init dead on a poll error
		}
		if !gone {
			return true
		}
		forgetInit(id)
		return false
	}
	if ok {
		forgetInit(id) // a different process now
	}
	// openPidfd checks the start time after pinning the process, so the
	// fd is for this init or there is none.
	fd, err := openPidfd(pid, start)
	if err != nil {
		return alive(pid, start) // gone, or no pidfd (ENOSYS, EMFILE): by /proc
	}
	if gone, err := exited(fd); err != nil || gone { // a zombie
		unix.Close(fd)
		return err != nil && alive(pid, start)
	}
	handlesMu.Lock()
	if old, ok := handles[id]; ok { // a concurrent call for the same ID
		unix.Close(old.fd)
	}
	handles[id] = initHandle{pid: pid, start: start, fd: fd}
	handlesMu.Unlock()
	return true
}

// forgetInit closes the kept pidfd of container id's init, if any.
func forgetInit(id string) {
	handlesMu.Lock()
	h, ok := handles[id]
	delete(handles, id)
	handlesMu.Unlock()
	if ok {
		unix.Close(h.fd)
	}
}

// exited reports whether the process of pidfd fd has exited (a pidfd
// polls readable then, zombie or reaped).
func exited(fd int) (bool, error) {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return n > 0, err
	}
}
