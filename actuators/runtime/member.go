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

type membership struct {
	pid     int
	start   uint64
	checked time.Time
}

// members remembers, by container ID, the last init found in its cgroup.
var members sync.Map

// inCgroupRecently is inCgroup, answered from memory when the same
// process was found in the container's cgroup less than memberRecheck ago.
func (r *Runtime) inCgroupRecently(ctx context.Context, id string, pid int, start uint64) bool {
	if v, ok := members.Load(id); ok {
		m := v.(membership)
		if m.pid == pid && m.start == start && time.Since(m.checked) < memberRecheck {
			return true
		}
	}
	in := r.inCgroup(ctx, id, pid)
	if in {
		members.Store(id, membership{pid: pid, start: start, checked: time.Now()})
	} else {
		members.Delete(id)
	}
	return in
}

// initHandle is a pidfd of a container's init, opened once it was seen
// alive: it stays the same process for good, and polling it (one call)
// says whether it has exited, where reading /proc/PID/stat (which the
// kernel formats field by field) was the dearest part of a status check.
type initHandle struct {
	pid   int
	start uint64
	fd    int
}

var (
	handlesMu sync.Mutex
	handles   = map[string]initHandle{} // by container ID
)

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
	if !alive(pid, start) {
		return false
	}
	fd, err := openPidfd(pid, start)
	if err != nil {
		return alive(pid, start) // no pidfd (ENOSYS, EMFILE): by /proc every time
	}
	if gone, err := exited(fd); err != nil || gone { // a zombie: alive() saw it just before it died
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
	members.Delete(id)
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
