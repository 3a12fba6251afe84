package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"vzd/actuators/cgroups"
	"vzd/actuators/runtime"
	"vzd/spec"
)

// The supervisor and the container init stage are not subcommands: the
// runtime re-executes vzd with a role in its environment, and
// runtime.Main (first thing in main) runs it.

func init() {
	var tty, noTTY bool
	register(&command{
		name:  "exec",
		args:  "CT -- CMD [ARG...]",
		short: "run a command inside a running container",
		long: `Runs CMD as root in every namespace and the cgroup of the container
(found by ID, name or UUID), with stdin, stdout and stderr wired through; a
terminal is allocated inside the container when stdin is one (or with -t).
The exit status is the command's (128+N when killed by signal N).`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&tty, "t", false, "allocate a terminal even when stdin is not one")
			fs.BoolVar(&noTTY, "T", false, "never allocate a terminal")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) > 1 && args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return errors.New("usage: vzd exec CT -- CMD [ARG...]")
			}
			return runExec(ctx, g, args[0], args[1:], (tty || isTerminal(os.Stdin)) && !noTTY)
		},
	})
	register(&command{
		name:  "enter",
		args:  "CT",
		short: "open a login shell inside a running container",
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: vzd enter CT")
			}
			return runExec(ctx, g, args[0], []string{"/bin/sh", "-l"}, isTerminal(os.Stdin))
		},
	})
	var follow bool
	register(&command{
		name:  "logs",
		args:  "CT",
		short: "print a container's console output",
		long:  `Prints the console log the container's supervisor keeps (size-capped: the older part, once rotated, first).`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&follow, "f", false, "keep printing what the console writes")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: vzd logs [-f] CT")
			}
			c, err := findContainer(g, args[0])
			if err != nil {
				return err
			}
			return printLogs(ctx, g.stdout, runtime.ConsoleLogPath(c), follow)
		},
	})
}

// findContainer looks a container up by ID, name or UUID in the config.
func findContainer(g *globals, key string) (*spec.Container, error) {
	set, err := spec.Load(g.paths)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if c, ok := set.Containers[key]; ok {
		return c, nil
	}
	for _, c := range set.Containers {
		if c.Name == key || c.UUID == key {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no container %q in %s", key, g.paths.ConfigDir)
}

func newRuntime(g *globals) (*runtime.Runtime, error) {
	cg, err := cgroups.New(g.log)
	if err != nil {
		return nil, err
	}
	return runtime.New(runtime.Config{Paths: g.paths, Cgroups: cg, Log: g.log})
}

func runExec(ctx context.Context, g *globals, key string, argv []string, tty bool) error {
	c, err := findContainer(g, key)
	if err != nil {
		return err
	}
	rt, err := newRuntime(g)
	if err != nil {
		return err
	}
	code, err := rt.Exec(ctx, c, argv, os.Stdin, os.Stdout, os.Stderr, tty)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// printLogs copies the rotated and the current console log to w; with
// follow, it keeps copying what is appended (reopening after a rotation)
// until ctx ends.
func printLogs(ctx context.Context, w io.Writer, path string, follow bool) error {
	if f, err := os.Open(path + ".1"); err == nil {
		io.Copy(w, f)
		f.Close()
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	if _, err := io.Copy(w, f); err != nil {
		return err
	}
	for follow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		cur, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && !os.SameFile(cur, now) {
			// Rotated: finish the old file, continue with the new one.
			io.Copy(w, f)
			nf, err := os.Open(path)
			if err != nil {
				continue
			}
			f.Close()
			f = nf
		}
	}
	return nil
}
