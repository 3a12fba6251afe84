// Package node wires the actuators (images, runtime, cgroups, network,
// templates, dedup) into the reconciler's Node contract. It holds no logic
// of its own beyond the order of calls within one step.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"vzd/actuators/cgroups"
	"vzd/actuators/image"
	"vzd/actuators/network"
	"vzd/actuators/runtime"
	apptemplates "vzd/actuators/templates"
	"vzd/dedup"
	"vzd/reconciler"
	"vzd/spec"
	"vzd/templates"
)

// Config configures a Node.
type Config struct {
	Paths  spec.Paths
	Global *spec.Global // nil = defaults
	Log    *slog.Logger
	// HostNS is the network namespace of the node's side of the links
	// ("" = the agent's own).
	HostNS string
	// Uplink is the node's interface for proxy ARP/NDP of routed
	// addresses ("" = none).
	Uplink string
	// Progress reports long work (template builds); nil = silent.
	Progress templates.Progress
	// DriftInterval is how often a running container's cgroup limits are
	// read back and compared with its spec (0 = on every observation).
	// Reading a container's cgroup files was a quarter of a pass with
	// nothing to do, and only a hand edit changes them behind the
	// agent's back; a spec change applies its limits whatever this is.
	DriftInterval time.Duration
}

// Node is the real node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	Images    *image.Actuator
	Runtime   *runtime.Runtime
	Cgroups   cgroups.Manager
	Network   *network.Actuator
	Templates *templates.Cache
	Apps      *apptemplates.Actuator
	Dedup     *dedup.Cache // nil when disabled

	loader spec.Loader // parses again only the files that changed

	driftMu      sync.Mutex
	driftChecked map[string]time.Time // container ID -> last limits check
}

var _ reconciler.Node = (*Node)(nil)

// New builds the actuators. Close releases them.
func New(cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: cfg.Log, loader: spec.Loader{Paths: cfg.Paths}}
	var err error
	if n.Cgroups, err = cgroups.New(cfg.Log); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	dcfg := spec.DedupConfig{}
	if cfg.Global != nil {
		dcfg = cfg.Global.Dedup
	}
	// Without the cache, roots still mount through dedup's plain mounter:
	// a container that once ran on an overlay has its writes in delta/,
	// so its tree is overlay(delta over root), never root/ alone.
	rootMounter := dedup.PlainMounter(cfg.Log)
	if dcfg.Enabled {
		if n.Dedup, err = dedup.New(dedup.Config{Paths: cfg.Paths, Dedup: dcfg, Log: cfg.Log}); err != nil {
			// The cache is an optimisation: never fail the node for it.
			cfg.Log.Warn("file cache unavailable; containers mount without it", "err", err)
			n.Dedup = nil
		} else {
			rootMounter = n.Dedup.Mounter()
		}
	}
	if n.Images, err = image.New(image.Config{Paths: cfg.Paths, Log: cfg.Log, RootMounter: rootMounter}); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	if n.Runtime, err = runtime.New(runtime.Config{Paths: cfg.Paths, Cgroups: n.Cgroups, Log: cfg.Log, Roots: rootMounter}); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if n.Network, err = network.New(network.Config{HostNS: cfg.HostNS, Uplink: cfg.Uplink, Log: cfg.Log}); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	n.Templates = templates.NewCache(cfg.Paths, cfg.Log)
	n.Apps = apptemplates.New(n.Templates, execer{n.Runtime}, cfg.Log)
	return n, nil
}

// Close releases what New opened.
func (n *Node) Close() error {
	var errs []error
	if n.Network != nil {
		errs = append(errs, n.Network.Close())
	}
	if n.Dedup != nil {
		errs = append(errs, n.Dedup.Close())
	}
	return errors.Join(errs...)
}

// execer adapts the runtime to the app templates' Execer.
type execer struct{ rt *runtime.Runtime }

func (e execer) Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return e.rt.Exec(ctx, c, argv, stdin, stdout, stderr, false)
}

// Observe reads the container's state from the kernel and records.
func (n *Node) Observe(ctx context.Context, c *spec.Container) (reconciler.Actual, error) {
	var a reconciler.Actual
	img, err := n.Images.Observe(ctx, c)
	if err != nil {
		return a, fmt.Errorf("image: %w", err)
	}
	a.ImageExists = img.Exists && img.Complete
	a.Mounted = img.Mounted && img.RootMounted
	a.DiskSize = img.Size
	a.PendingGrow = img.PendingGrow
	st, err := n.Runtime.Status(ctx, c)
	if err != nil {
		return a, fmt.Errorf("runtime: %w", err)
	}
	a.Running, a.Pid, a.StartTime, a.StartedAt = st.Running, st.Pid, st.StartTime, st.StartedAt
	if a.ImageExists {
		if a.AppliedApps, err = n.Apps.Applied(ctx, c); err != nil {
			a.ObservedError = err.Error()
		}
	}
	if a.Running && n.driftDue(c.ID) {
		want := cgroups.FromSpec(c, img.DevNumber)
		if got, err := n.Cgroups.Read(ctx, c.ID); err == nil && len(cgroups.Drift(n.Cgroups.Version(), want, got)) > 0 {
			a.LimitsDrift = true
		}
	}
	return a, nil
}

// driftDue reports whether id's limits are to be read back now, and if so
// counts this as its check.
func (n *Node) driftDue(id string) bool {
	if n.cfg.DriftInterval <= 0 {
		return true
	}
	now := time.Now()
	n.driftMu.Lock()
	defer n.driftMu.Unlock()
	// A tenth of slack: with a resync period equal to the interval, a
	// check made a little less than the interval ago is still due, or
	// every other pass would skip it.
	if last, ok := n.driftChecked[id]; ok && now.Sub(last) < n.cfg.DriftInterval-n.cfg.DriftInterval/10 {
		return false
	}
	if n.driftChecked == nil {
		n.driftChecked = map[string]time.Time{}
	}
	n.driftChecked[id] = now
	return true
}

// forgetDrift makes id's limits due for a check at its next observation.
func (n *Node) forgetDrift(id string) {
	n.driftMu.Lock()
	delete(n.driftChecked, id)
	n.driftMu.Unlock()
}

func (n *Node) CreateImage(ctx context.Context, c *spec.Container) error {
	src := ""
	if c.OSTemplate != "" {
		var err error
		if src, err = n.Templates.Image(ctx, c.OSTemplate, n.cfg.Progress); err != nil {
			return fmt.Errorf("template %s: %w", c.OSTemplate, err)
		}
	}
	return n.Images.Create(ctx, c, src)
}

func (n *Node) Mount(ctx context.Context, c *spec.Container) error { return n.Images.Mount(ctx, c) }

func (n *Node) Resize(ctx context.Context, c *spec.Container) (bool, error) {
	return n.Images.Resize(ctx, c)
}

func (n *Node) ApplyTemplates(ctx context.Context, c *spec.Container, running bool) error {
	return n.Apps.Apply(ctx, c, running)
}

func (n *Node) ApplyLimits(ctx context.Context, c *spec.Container) error {
	img, err := n.Images.Observe(ctx, c)
	if err != nil {
		return err
	}
	if err := n.Cgroups.Create(ctx, c.ID); err != nil {
		return err
	}
	if err := n.Cgroups.Apply(ctx, c.ID, cgroups.FromSpec(c, img.DevNumber)); err != nil {
		return err
	}
	n.forgetDrift(c.ID) // read back at the next observation
	return nil
}

func (n *Node) Start(ctx context.Context, c *spec.Container) error { return n.Runtime.Start(ctx, c) }

func (n *Node) ApplyNetwork(ctx context.Context, c *spec.Container) ([]string, error) {
	if err := n.Network.WriteFiles(ctx, c); err != nil {
		return nil, err
	}
	pid, err := n.Runtime.InitPid(ctx, c)
	if err != nil {
		return nil, err
	}
	return n.Network.Apply(ctx, c, pid)
}

func (n *Node) Stop(ctx context.Context, c *spec.Container) error { return n.Runtime.Stop(ctx, c) }

func (n *Node) Teardown(ctx context.Context, c *spec.Container) error {
	n.forgetDrift(c.ID)
	return errors.Join(n.Network.Remove(ctx, c), n.Cgroups.Remove(ctx, c.ID))
}

func (n *Node) Unmount(ctx context.Context, c *spec.Container) error {
	return n.Images.Unmount(ctx, c)
}

func (n *Node) Destroy(ctx context.Context, c *spec.Container) error {
	return n.Images.Destroy(ctx, c)
}

// Load reads the desired state and adds what only the node can check:
// template names must be known here. A container naming an unknown
// template is an error of its file, like any other invalid value, so the
// file's containers keep their last good spec.
func (n *Node) Load() (*spec.Set, error) {
	set, err := n.loader.Load()
	if err != nil {
		return nil, err
	}
	n.CheckTemplates(set)
	return set, nil
}

// CheckTemplates turns unknown template names into errors of their files.
func (n *Node) CheckTemplates(set *spec.Set) {
	for id, c := range set.Containers {
		diags := n.Templates.Check(c)
		if len(diags) == 0 {
			continue
		}
		set.Diags = append(set.Diags, diags...)
		delete(set.Containers, id)
		if f := set.Files[c.Source.File]; f != nil {
			f.Failed = true
		}
	}
}
