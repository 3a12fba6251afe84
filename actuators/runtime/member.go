package runtime

import (
	"context"
	"sync"
	"time"
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
