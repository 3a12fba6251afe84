package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"vzd/reconciler"
)

var jsonOut bool

func jsonFlag(fs *flag.FlagSet) { fs.BoolVar(&jsonOut, "json", false, "print JSON for scripts") }

func init() {
	register(&command{
		name:  "status",
		short: "show the containers and what the agent is doing with them",
		long: `Asks the running agent over its control socket. Columns: desired and actual
state, init pid, uptime, changes pending a restart, and the last error with
the file and line it comes from. --json prints the agent's whole status.`,
		flags: jsonFlag,
		run:   runStatus,
	})
	register(&command{
		name:  "plan",
		short: "print what the agent would do now, without doing it",
		long: `Reads the config directory, observes the node and prints the plan of each
container: the ordered steps, whether each applies live, and the changes
that wait for a restart. Nothing is changed.`,
		flags: jsonFlag,
		run:   runPlan,
	})
	var yes, all bool
	register(&command{
		name:  "destroy",
		args:  "CT... | --all",
		short: "remove undeclared containers and all their data",
		long: `Destroys a container that no config file declares any more (an orphan):
stops it and removes its private area, image included. A declared container
is refused: set state = "destroyed" in its file instead. --all destroys
every undeclared container. Asks to type the ID (or "all") to confirm
unless --yes. Goes through the running agent; without one, acts directly.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
			fs.BoolVar(&all, "all", false, "every undeclared container")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) == 0 && !all {
				return errors.New("usage: vzd destroy [--yes] CT... | --all")
			}
			if !yes {
				want := strings.Join(args, " ")
				if all {
					want = "all"
				}
				fmt.Fprintf(g.stdout, "This removes %s and all data. Type %q to confirm: ", want, want)
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if strings.TrimSpace(line) != want {
					return errors.New("not confirmed; nothing was changed")
				}
			}
			return runDestroy(ctx, g, args, all)
		},
	})
	register(&command{
		name:  "start",
		args:  "CT",
		short: "start a container that waits for an explicit start (onboot off after a reboot)",
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: vzd start CT")
			}
			return callAgent(ctx, g, "POST", "/start", url.Values{"id": {args[0]}}, 30*time.Second, nil)
		},
	})
	register(&command{
		name:  "sync",
		short: "ask the agent for a pass now (like SIGHUP)",
		run: func(ctx context.Context, g *globals, args []string) error {
			return callAgent(ctx, g, "POST", "/sync", nil, 10*time.Second, nil)
		},
	})
}

func runStatus(ctx context.Context, g *globals, args []string) error {
	var st reconciler.Status
	if err := callAgent(ctx, g, "GET", "/status", nil, 10*time.Second, &st); err != nil {
		return err
	}
	if jsonOut {
		return printJSON(g, st)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tDESIRED\tACTUAL\tPID\tUPTIME\tPENDING\tERROR")
	for _, c := range st.Containers {
		errText := c.LastError
		if c.ErrorAt != "" {
			errText = c.ErrorAt + ": " + errText
		}
		if c.Orphaned {
			errText = strings.TrimSpace("orphaned (no config file; data kept) " + errText)
		}
		pid := "-"
		if c.Pid > 0 {
			pid = fmt.Sprint(c.Pid)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", c.ID, dash(c.Name), c.Desired, c.Actual, pid, dash(c.Uptime), len(c.Pending), dash(errText))
	}
	w.Flush()
	fmt.Fprintf(g.stdout, "\n%d running, %d pending, %d failed", st.Running, st.Pending, st.Failed)
	if !st.Synced {
		fmt.Fprint(g.stdout, " (first pass not complete yet)")
	}
	fmt.Fprintln(g.stdout)
	for _, d := range st.Rejected {
		fmt.Fprintf(g.stdout, "rejected: %s\n", d)
	}
	return nil
}

func runPlan(ctx context.Context, g *globals, args []string) error {
	node, closeNode, err := newNode(ctx, g)
	if err != nil {
		return err
	}
	defer closeNode()
	plans, err := reconciler.Plans(ctx, reconciler.Config{Paths: g.paths, Node: node, Load: node.Load, Log: g.log})
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(g, plans)
	}
	for _, p := range plans {
		if len(p.Steps) == 0 && len(p.Pending) == 0 && len(p.Notes) == 0 {
			fmt.Fprintf(g.stdout, "%s: up to date\n", p.ID)
			continue
		}
		fmt.Fprintf(g.stdout, "%s:\n", p.ID)
		for _, s := range p.Steps {
			fmt.Fprintf(g.stdout, "  + %s\n", s)
		}
		for _, s := range p.Pending {
			fmt.Fprintf(g.stdout, "  ~ pending: %s\n", s)
		}
		for _, s := range p.Notes {
			fmt.Fprintf(g.stdout, "  # %s\n", s)
		}
	}
	return nil
}

func printJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runDestroy(ctx context.Context, g *globals, ids []string, all bool) error {
	var st reconciler.Status
	err := callAgent(ctx, g, "GET", "/status", nil, 10*time.Second, &st)
	if errors.Is(err, errNoAgent) {
		return destroyOffline(ctx, g, ids, all)
	}
	if err != nil {
		return err
	}
	if all {
		for _, c := range st.Containers {
			if c.Orphaned {
				ids = append(ids, c.ID)
			}
		}
	}
	return destroyEach(g, ids, func(id string) error {
		return callAgent(ctx, g, "POST", "/destroy", url.Values{"id": {id}}, 10*time.Minute, nil)
	})
}

// destroyEach destroys ids a few at a time (each stop may wait for a
// container's own shutdown) and reports every failure.
func destroyEach(g *globals, ids []string, destroy func(string) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 8)
	)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := destroy(id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				return
			}
			fmt.Fprintf(g.stdout, "%s destroyed\n", id)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// destroyOffline destroys without an agent (the agent is stopped, as after
// the demo): the same checks, done by this process.
func destroyOffline(ctx context.Context, g *globals, ids []string, all bool) error {
	node, closeNode, err := newNode(ctx, g)
	if err != nil {
		return err
	}
	defer closeNode()
	r := reconciler.New(reconciler.Config{Paths: g.paths, Node: node, Load: node.Load, Log: g.log, NoWatch: true})
	if err := r.Snapshot(); err != nil {
		return err
	}
	if all {
		_, undeclared := r.IDs()
		for id := range undeclared {
			ids = append(ids, id)
		}
	}
	return destroyEach(g, ids, func(id string) error { return r.Destroy(ctx, id) })
}
