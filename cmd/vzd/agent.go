package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/renameio/v2"

	"vzd/dedup"
	"vzd/internal/pidwatch"
	"vzd/reconciler"
	"vzd/systemd"
)

var agentFlags struct {
	workers int
	resync  time.Duration
	drift   time.Duration
}

func init() {
	register(&command{
		name:  "agent",
		short: "run the node agent: watch the config directory and converge containers",
		long: `The agent watches the config directory, diffs the desired containers
against the node and converges them. It is meant to run as the systemd
service vzd.service (Type=notify): READY=1 after the first full pass,
STATUS= with counts, WATCHDOG=1 from the loop, RELOADING=1 on SIGHUP.
Stopping the agent (SIGTERM, Ctrl-C) leaves every container running.`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&agentFlags.workers, "workers", 4, "containers converged at once")
			fs.DurationVar(&agentFlags.resync, "resync", 5*time.Minute, "period of the full relist that repairs what changed behind the agent's back, e.g. a link deleted or a file system unmounted by hand (file edits, init exits, SIGHUP and vzd requests start a pass at once)")
			fs.DurationVar(&agentFlags.drift, "drift-interval", 30*time.Minute, "how often each running container's cgroup limits are read back and repaired if edited by hand, at a resync pass (0: every pass)")
		},
		run: runAgent,
	})
}

func runAgent(ctx context.Context, g *globals, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	if err := os.MkdirAll(g.paths.RunDir(), 0o755); err != nil {
		return err
	}
	unlock, err := lockAgent(g)
	if err != nil {
		return err
	}
	defer unlock()
	node, closeNode, err := newNodeWith(g, agentFlags.drift)
	if err != nil {
		return err
	}
	defer closeNode()

	wd := systemd.NewWatchdog(0)
	if iv, ok := systemd.WatchdogInterval(); ok {
		wd = systemd.NewWatchdog(iv)
		go wd.Run(ctx)
	}
	sw := newStatusWriter(g)
	var reloading atomic.Bool
	var r *reconciler.Reconciler
	exits, err := pidwatch.New(func(id string) { r.Exited(id) })
	if err != nil {
		return err
	}
	go func() {
		if err := exits.Run(ctx); err != nil {
			g.log.Error("init exit watcher stopped; crashes are seen at the next resync", "err", err)
		}
	}()
	r = reconciler.New(reconciler.Config{
		Paths:    g.paths,
		Node:     node,
		Load:     node.Load,
		Log:      g.log,
		Workers:  agentFlags.workers,
		Resync:   agentFlags.resync,
		Progress: wd.Beat,
		Exits:    exits,
		OnChange: func() { sw.update(r.Status) },
		OnPass: func() {
			if reloading.CompareAndSwap(true, false) {
				_ = systemd.Ready()
			}
		},
	})

	if node.Dedup != nil {
		stop, err := node.Dedup.Schedule(ctx, func(context.Context) (map[string]string, error) {
			return dedup.Trees(r.Containers()), nil
		})
		if err != nil {
			g.log.Warn("file cache scans not scheduled", "err", err)
		} else {
			defer stop()
		}
	}
	go func() {
		if err := serveControl(ctx, g, r); err != nil {
			g.log.Error("control socket failed", "err", err)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				g.log.Info("reload requested")
				reloading.Store(true)
				_ = systemd.Reloading()
				r.Trigger()
			}
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-r.Synced():
			st := r.Status()
			g.log.Info("first pass complete", "containers", len(st.Containers), "running", st.Running, "failed", st.Failed)
			_ = systemd.Ready()
		}
	}()

	g.log.Info("agent started", "config_dir", g.paths.ConfigDir, "root", g.paths.Prefix, "pid", os.Getpid())
	err = r.Run(ctx)
	_ = systemd.Stopping()
	sw.flush()
	g.log.Info("agent stopped; containers keep running")
	return err
}

// statusWriter writes status.json atomically and sends STATUS= at most
// five times a second, whatever the rate of changes; the status itself is
// built only when written.
type statusWriter struct {
	path   string
	mu     sync.Mutex
	source func() reconciler.Status
	tmr    *time.Timer
}

func newStatusWriter(g *globals) *statusWriter {
	return &statusWriter{path: filepath.Join(g.paths.RunDir(), "status.json")}
}

func (w *statusWriter) update(source func() reconciler.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.source = source
	if w.tmr == nil {
		w.tmr = time.AfterFunc(200*time.Millisecond, w.flush)
	}
}

func (w *statusWriter) flush() {
	w.mu.Lock()
	source := w.source
	w.tmr = nil
	w.mu.Unlock()
	if source == nil {
		return
	}
	s := source()
	b, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		_ = renameio.WriteFile(w.path, b, 0o644)
	}
	_ = systemd.Status("running %d, pending %d, failed %d", s.Running, s.Pending, s.Failed)
}

// lockAgent makes sure one agent runs per root: two would fight over every
// container. The flock dies with the process, so a killed agent never
// blocks the next one.
func lockAgent(g *globals) (func(), error) {
	path := filepath.Join(g.paths.RunDir(), "agent.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another vzd agent (pid %s) runs on this root (%s): stop it first", strings.TrimSpace(string(b)), g.paths.Prefix)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() { f.Close() }, nil
}
