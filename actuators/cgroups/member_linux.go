package cgroups

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"vzd/internal/procfs"
)

// InCgroup reports whether pid is in the cgroup dir of the hierarchy named
// key (a Dirs key: "pids", "name=systemd", "" for cgroup2) or in one of its
// children. It reads /proc/PID/cgroup, one small file, where Procs walks
// the container's whole tree in every hierarchy: the runtime asks this of
// every running container on every pass.
func InCgroup(pid int, key, dir string) (bool, error) {
	b, err := procfs.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || !hierarchyMatches(f[1], key) {
			continue
		}
		// The path is relative to the hierarchy's root; dir is that root's
		// mount point followed by the same path, or by a prefix of it when
		// the process sits in a child cgroup.
		for p := f[2]; p != "/" && p != "." && p != ""; p = filepath.Dir(p) {
			if strings.HasSuffix(dir, p) {
				return true, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("pid %d: no %q hierarchy in /proc/%d/cgroup", pid, key, pid)
}

func hierarchyMatches(controllers, key string) bool {
	if key == "" || strings.HasPrefix(key, "name=") {
		return controllers == key
	}
	return slices.Contains(strings.Split(controllers, ","), key)
}
