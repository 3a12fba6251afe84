package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"vzd/internal/procfs"
)

// writeFile writes value to the control file dir/name. It never creates the
// file: cgroupfs makes control files itself, and a missing one means the
// kernel lacks the feature (or the cgroup is gone), which the caller must
// see as fs.ErrNotExist. The error carries the value, like
// opencontainers/cgroups does, because "invalid argument" alone says nothing.
func writeFile(dir, name, value string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.WriteString(value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, unwrapPath(err))
	}
	return nil
}

// unwrapPath drops os.PathError's own copy of the path, which the callers'
// messages already carry.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readFile returns the content of dir/name without the trailing newline.
func readFile(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	b, err := procfs.ReadFile(p) // open/read/close: a limits check reads a dozen
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, unwrapPath(err))
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// readInt reads a file holding one integer; unlimited, when non-empty, is
// the word the kernel writes for "no limit" ("max") and reads as -1.
func readInt(dir, name, unlimited string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	if unlimited != "" && s == unlimited {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(dir, name), err)
	}
	return n, nil
}

// exists reports whether dir/name exists.
func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// readPids parses a cgroup.procs file. A missing file (cgroup gone) is an
// empty list.
func readPids(dir string) ([]int, error) {
	s, err := readFile(dir, "cgroup.procs")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cgroup.procs"), err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// removeTree removes the cgroup directory dir and every child cgroup below
// it, deepest first: cgroupfs refuses rmdir on a cgroup with children, and
// a cgroup directory's control files go away with rmdir (os.RemoveAll
// would try to unlink them, which cgroupfs refuses). An absent dir is not
// an error; EBUSY means a process is still inside.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, unwrapPath(err))
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	err = os.Remove(dir)
	// Right after the last process of a cgroup exits, rmdir may still see
	// it populated for a moment (the exit is accounted asynchronously);
	// runc retries too. Bounded: about 300 ms in all, so a cgroup that
	// really holds processes is reported quickly.
	for delay := 10 * time.Millisecond; errors.Is(err, syscall.EBUSY) && delay <= 160*time.Millisecond; delay *= 2 {
		time.Sleep(delay)
		err = os.Remove(dir)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("remove cgroup %s: processes still inside: %w", dir, unwrapPath(err))
		}
		return fmt.Errorf("remove cgroup %s: %w", dir, unwrapPath(err))
	}
	return nil
}

// treePids lists the pids in cgroup.procs of dir and of every cgroup
// below it. An absent dir, or a child removed during the walk, adds none.
func treePids(dir string) ([]int, error) {
	var all []int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := readPids(p)
		all = append(all, pids...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", dir, unwrapPath(err))
	}
	return all, nil
}
