package reconciler

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"vzd/spec"
)

// Config configures a Reconciler. Zero fields take the defaults named.
type Config struct {
	Paths spec.Paths
	Node  Node
	// Load reads the desired state; default spec.Load(Paths). It returns
	// an error only when nothing could be read (the directory itself):
	// then the pass is skipped and nothing is pruned.
	Load func() (*spec.Set, error)
	Log  *slog.Logger
	// Workers is how many containers converge at once (default 4).
	Workers int
	// Resync is the period of the full relist backstop (default 30s).
	Resync time.Duration
	// Debounce is the quiet time after a burst of file events (default 100ms).
	Debounce time.Duration
	// BackoffBase and BackoffMax bound the retry delay of a failing
	// container (defaults 1s and 5m).
	BackoffBase, BackoffMax time.Duration
	// BootID identifies this boot of the node (default read from
	// /proc/sys/kernel/random/boot_id).
	BootID string
	// Progress is called whenever the loop makes progress (a pass loaded,
	// a container synced); the systemd watchdog beats from it.
	Progress func()
	// OnChange is called after each change of status (for status.json
	// and sd_notify STATUS=); the callee reads Status when it needs it,
	// so a pass over n containers does not build n snapshots.
	OnChange func()
	// OnPass is called after each pass has loaded the config and queued
	// the containers (a reload is complete then).
	OnPass func()
	// NoWatch disables fsnotify (tests drive Trigger directly).
	NoWatch bool
	// Exits, when set, is told of every running container's init; it
	// calls Reconciler.Exited when that init exits, so a container that
	// died is seen at once, not at the next resync.
	Exits ExitWatcher
}

// ExitWatcher watches processes by key (pidwatch.Watcher).
type ExitWatcher interface {
	Watch(key string, pid int, start uint64) error
	Forget(key string)
}

// Reconciler converges the node to the desired state.
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	q       *queue
	backoff *backoff
	trigger chan struct{}
	synced  chan struct{}

	mu        sync.Mutex
	loaded    bool // a complete load happened: pruning is allowed
	set       *spec.Set
	desired   map[string]*spec.Container // from the latest load, valid only
	failed    map[string]bool            // declared in a file that failed
	records   map[string]*Record
	hashes    map[*spec.Container]string // Hash() of each loaded spec, kept while the loader returns the same one
	status    map[string]*ContainerStatus
	firstPass map[string]bool // IDs still to sync before Synced
	passes    int
	lastPass  time.Time
	reported  map[string]bool // rejections already logged; only the loop goroutine uses it
}

// New returns a Reconciler; Run starts it.
func New(cfg Config) *Reconciler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Load == nil {
		p := cfg.Paths
		cfg.Load = func() (*spec.Set, error) { return spec.Load(p) }
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.BootID == "" {
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		cfg.BootID = strings.TrimSpace(string(b))
	}
	if cfg.Progress == nil {
		cfg.Progress = func() {}
	}
	return &Reconciler{
		cfg:     cfg,
		log:     cfg.Log,
		q:       newQueue(),
		backoff: newBackoff(cfg.BackoffBase, cfg.BackoffMax),
		trigger: make(chan struct{}, 1),
		synced:  make(chan struct{}),
		desired: map[string]*spec.Container{},
		failed:  map[string]bool{},
		records: map[string]*Record{},
		status:  map[string]*ContainerStatus{},
	}
}

// Trigger asks for a new pass; it never blocks. Many triggers before the
// pass starts make one pass.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Exited syncs container id soon: its init exited.
func (r *Reconciler) Exited(id string) {
	r.log.Info("container init exited", "container", id)
	r.q.AddFirst(id)
}

// watchExit keeps the exit watch of id in step with what was observed.
func (r *Reconciler) watchExit(id string, a Actual) {
	if r.cfg.Exits == nil {
		return
	}
	if !a.Running || a.Pid <= 0 {
		r.cfg.Exits.Forget(id)
		return
	}
	if err := r.cfg.Exits.Watch(id, a.Pid, a.StartTime); err != nil {
		r.log.Warn("init exit not watched; a crash is seen at the next resync", "container", id, "err", err)
	}
}

// Synced is closed once the first complete pass is done: every container
// known at start has been synced once (successfully or not).
func (r *Reconciler) Synced() <-chan struct{} { return r.synced }

// Run runs the loop until ctx ends. Workers finish their current step.
func (r *Reconciler) Run(ctx context.Context) error {
	var w *watcher
	if !r.cfg.NoWatch {
		var err error
		if w, err = newWatcher(r.log, r.cfg.Debounce, r.cfg.Paths.ConfigDir); err != nil {
			return fmt.Errorf("watch config directory: %w", err)
		}
		w.Watch(r.watchDirs())
		go w.Run(ctx, r.Trigger)
	}

	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.worker(ctx)
		}()
	}
	defer func() {
		r.q.Close()
		wg.Wait()
	}()

	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	// The heartbeat proves the loop itself is alive while idle (the
	// systemd watchdog); a loop stuck in a pass stops beating.
	heartbeat := time.NewTicker(5 * time.Second)
	defer heartbeat.Stop()
	for {
		r.pass(ctx)
		if w != nil {
			// After a pass only: the links among the files it loaded
			// are what can have changed (the heartbeat below used to
			// lstat every file every 5 s).
			w.Watch(r.watchDirs())
		}
		if !r.wait(ctx, tick.C, heartbeat.C) {
			return nil
		}
	}
}

// wait returns when the next pass is due (a trigger or the resync tick),
// beating the heartbeat meanwhile; false when ctx ends.
func (r *Reconciler) wait(ctx context.Context, tick, heartbeat <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-heartbeat:
			r.cfg.Progress()
		case <-r.trigger:
			return true
		case <-tick:
			return true
		}
	}
}

// watchDirs are the config directory, the global config's directory and
// the directories symlinked configs point into.
func (r *Reconciler) watchDirs() []string {
	dirs := []string{r.cfg.Paths.ConfigDir, filepath.Dir(r.cfg.Paths.GlobalConfig)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set != nil {
		for path := range r.set.Files {
			// One lstat for a plain file; resolving every file's path
			// component by component was a sixth of an idle pass.
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				continue
			}
			if t, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(t) != filepath.Clean(r.cfg.Paths.ConfigDir) {
				dirs = append(dirs, filepath.Dir(t))
			}
		}
	}
	return dirs
}

// pass loads the desired state and queues every container the node knows
// of, declared or recorded.
func (r *Reconciler) pass(ctx context.Context) {
	set, err := r.cfg.Load()
	recs, recErr := ListRecords(r.cfg.Paths.PrivateBase())
	r.cfg.Progress()
	if err != nil {
		// The directory itself is unreadable: do nothing at all rather
		// than treat every container as removed.
		r.log.Error("config directory unreadable; nothing changed", "dir", r.cfg.Paths.ConfigDir, "err", err)
		r.markFirstPassDoneIfNothing()
		return
	}
	if recErr != nil {
		r.log.Warn("some container records are unreadable", "err", recErr)
	}
	// Say each rejection once, not on every resync.
	seen := map[string]bool{}
	for _, d := range set.Diags {
		if d.Severity != spec.SeverityError {
			continue
		}
		key := d.String()
		seen[key] = true
		if !r.reported[key] {
			r.log.Warn("config rejected", "pos", d.Pos.String(), "err", d.Message)
		}
	}
	r.reported = seen

	// The loader hands back the same *Container for an unchanged file, so
	// a hash is computed once per spec, not three times per pass.
	hashes := make(map[*spec.Container]string, len(set.Containers))
	r.mu.Lock()
	old := r.hashes
	r.mu.Unlock()
	for _, d := range set.Containers {
		h, ok := old[d]
		if !ok {
			h = d.Hash()
		}
		hashes[d] = h
	}

	r.mu.Lock()
	r.loaded = true
	r.set = set
	r.hashes = hashes
	r.desired = set.Containers
	r.failed = failedIDs(set, recs)
	// The records on disk are the truth: every change is written there
	// before it is kept in memory.
	r.records = recs
	ids := map[string]bool{}
	for id := range r.desired {
		ids[id] = true
	}
	for id := range r.failed {
		ids[id] = true
	}
	for id := range r.records {
		ids[id] = true
	}
	// Forget status of containers nothing knows of any more.
	for id := range r.status {
		if !ids[id] {
			delete(r.status, id)
		}
	}
	first := r.firstPass == nil && r.passes == 0
	if first {
		r.firstPass = map[string]bool{}
		for id := range ids {
			r.firstPass[id] = true
		}
	}
	r.passes++
	r.lastPass = time.Now()
	r.mu.Unlock()

	// Containers whose spec changed go first, so a new or edited file
	// does not wait behind the no-op syncs of every other container.
	sorted := make([]string, 0, len(ids))
	changed := map[string]bool{}
	for id := range ids {
		sorted = append(sorted, id)
		d, rec := set.Containers[id], recs[id]
		changed[id] = d != nil && (rec == nil || rec.AppliedHash != hashes[d])
	}
	sort.Slice(sorted, func(i, j int) bool {
		if changed[sorted[i]] != changed[sorted[j]] {
			return changed[sorted[i]]
		}
		return sorted[i] < sorted[j]
	})
	for i := len(sorted) - 1; i >= 0; i-- {
		if changed[sorted[i]] {
			r.q.AddFirst(sorted[i])
		}
	}
	for _, id := range sorted {
		if !changed[id] {
			r.q.Add(id)
		}
	}
	if first && len(ids) == 0 {
		r.closeSynced()
	}
	if r.cfg.OnPass != nil {
		r.cfg.OnPass()
	}
	r.publish()
}

func (r *Reconciler) markFirstPassDoneIfNothing() {
	r.mu.Lock()
	first := r.passes == 0
	r.passes++
	r.mu.Unlock()
	if first {
		r.closeSynced()
	}
}

var syncedOnce sync.Mutex

func (r *Reconciler) closeSynced() {
	syncedOnce.Lock()
	defer syncedOnce.Unlock()
	select {
	case <-r.synced:
	default:
		close(r.synced)
	}
}

func (r *Reconciler) worker(ctx context.Context) {
	for {
		id, ok := r.q.Get()
		if !ok {
			return
		}
		r.handle(ctx, id)
	}
}

// handle syncs one container taken from the queue and schedules its
// retry on failure.
func (r *Reconciler) handle(ctx context.Context, id string) {
	err := r.sync(ctx, id)
	switch {
	case err == nil:
		r.backoff.Reset(id)
	case ctx.Err() != nil:
		// Shutting down: the step was interrupted; the next agent
		// observes and finishes it.
	default:
		d := r.backoff.Next(id)
		r.log.Error("container sync failed", "container", id, "retry_in", d.String(), "err", err)
		r.q.AddAfter(id, d)
	}
	r.q.Done(id)
	r.cfg.Progress()
	r.mu.Lock()
	done := false
	if r.firstPass != nil && r.firstPass[id] {
		delete(r.firstPass, id)
		done = len(r.firstPass) == 0
	}
	r.mu.Unlock()
	if done {
		r.closeSynced()
	}
	r.publish()
}

// input gathers what Make needs for id from the latest snapshot.
func (r *Reconciler) input(id string) (Input, *spec.Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := Input{ID: id, Desired: r.desired[id], Record: r.records[id], BootID: r.cfg.BootID}
	if in.Desired != nil {
		in.DesiredHash = r.hashes[in.Desired]
	}
	if in.Desired == nil && r.failed[id] {
		if in.Record != nil && in.Record.LastGood != nil {
			in.Desired = in.Record.LastGood
		} else {
			in.Held = true
		}
	}
	target := in.Desired
	if target == nil && in.Record != nil {
		target = in.Record.LastGood
	}
	return in, target
}

// sync converges one container: observe, plan, act, record.
func (r *Reconciler) sync(ctx context.Context, id string) (retErr error) {
	in, target := r.input(id)
	st := r.statusFor(id)
	defer func() { r.finishStatus(id, in, retErr) }()
	if target == nil {
		return nil
	}
	log := r.log.With("container", id)
	a, err := r.cfg.Node.Observe(ctx, target)
	if err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	in.Actual = a
	r.watchExit(id, a)
	plan := Make(in)
	r.mu.Lock()
	st.Plan = plan
	st.fillActual(a)
	r.mu.Unlock()

	rec := in.Record
	if rec == nil {
		rec = &Record{ID: id}
	} else {
		cp := *rec
		rec = &cp
	}
	started := false
	for _, step := range plan.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := r.do(ctx, step, target, a); err != nil {
			return fmt.Errorf("%s: %w", step.Kind, err)
		}
		log.Info("step applied", "step", string(step.Kind), "live", step.Live, "reason", step.Reason, "took", time.Since(t0).Round(time.Millisecond).String())
		switch step.Kind {
		case StepStart:
			started = true
		case StepDestroy:
			r.mu.Lock()
			delete(r.records, id)
			r.mu.Unlock()
			return nil
		case StepCreateImage:
			// Record the spec as soon as the private area exists, so an
			// agent killed now still knows the container next time.
			rec.ConfigFile, rec.LastGood = target.Source.File, target
			if err := WriteRecord(target.Private, rec); err != nil {
				return err
			}
		}
	}

	if len(plan.Steps) > 0 {
		// Show what the steps made, not what was there before them.
		if a2, err := r.cfg.Node.Observe(ctx, target); err == nil {
			r.watchExit(id, a2)
			r.mu.Lock()
			st.fillActual(a2)
			st.observed = true
			r.mu.Unlock()
		}
	}
	if in.Desired == nil || in.Desired.State == spec.StateDestroyed {
		return nil
	}
	d := in.Desired
	changed := false
	set := func(cond bool, f func()) {
		if cond {
			f()
			changed = true
		}
	}
	h := in.desiredHash()
	set(rec.AppliedHash != h || rec.LastGood == nil, func() { rec.LastGood, rec.AppliedHash, rec.ConfigFile = d, h, d.Source.File })
	set(started || (a.Running && rec.Started == nil), func() { rec.Started, rec.BootID, rec.StartRequested = d, r.cfg.BootID, false })
	if plan.Steps != nil && hasStep(plan, StepStop) && !started {
		set(rec.Started != nil, func() { rec.Started = nil })
	}
	set(!equalStrings(rec.Pending, plan.Pending), func() { rec.Pending = plan.Pending })
	if !changed {
		return nil
	}
	if _, err := os.Stat(d.Private); err != nil {
		return nil // nothing created yet (e.g. Held): nothing to record
	}
	if err := WriteRecord(d.Private, rec); err != nil {
		return err
	}
	r.mu.Lock()
	r.records[id] = rec
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) do(ctx context.Context, s Step, c *spec.Container, a Actual) error {
	n := r.cfg.Node
	switch s.Kind {
	case StepCreateImage:
		return n.CreateImage(ctx, c)
	case StepResize:
		pending, err := n.Resize(ctx, c)
		if pending {
			r.log.Info("disk grow pending until next stop/start", "container", c.ID)
		}
		return err
	case StepMount:
		return n.Mount(ctx, c)
	case StepTemplates:
		return n.ApplyTemplates(ctx, c, a.Running && s.Live)
	case StepLimits:
		return n.ApplyLimits(ctx, c)
	case StepStart:
		return n.Start(ctx, c)
	case StepNetwork:
		restart, err := n.ApplyNetwork(ctx, c)
		if len(restart) > 0 {
			r.mu.Lock()
			if st := r.status[c.ID]; st != nil {
				st.Plan.Pending = append(st.Plan.Pending, restart...)
			}
			r.mu.Unlock()
		}
		return err
	case StepStop:
		return n.Stop(ctx, c)
	case StepTeardown:
		return n.Teardown(ctx, c)
	case StepUnmount:
		return n.Unmount(ctx, c)
	case StepDestroy:
		return n.Destroy(ctx, c)
	}
	return fmt.Errorf("unknown step %q", s.Kind)
}

// Destroy removes an undeclared container's data on an explicit request.
// A declared container is refused: its file would bring it back.
func (r *Reconciler) Destroy(ctx context.Context, id string) error {
	r.mu.Lock()
	d, rec, failed := r.desired[id], r.records[id], r.failed[id]
	r.mu.Unlock()
	if d != nil || failed {
		file := ""
		if d != nil {
			file = d.Source.File
		}
		return fmt.Errorf("container %s is declared in %s: remove the file, or set state = \"destroyed\" in it", id, file)
	}
	if rec == nil || rec.LastGood == nil {
		return fmt.Errorf("container %s: %w", id, os.ErrNotExist)
	}
	c := rec.LastGood
	n := r.cfg.Node
	for _, f := range []func(context.Context, *spec.Container) error{n.Stop, n.Teardown, n.Unmount, n.Destroy} {
		if err := f(ctx, c); err != nil {
			return err
		}
	}
	r.mu.Lock()
	delete(r.records, id)
	delete(r.status, id)
	r.mu.Unlock()
	r.log.Info("container destroyed on request", "container", id)
	r.publish()
	return nil
}

// RequestStart starts a container that waits for an explicit start (onboot
// off after a reboot).
func (r *Reconciler) RequestStart(id string) error {
	r.mu.Lock()
	rec := r.records[id]
	if rec == nil {
		r.mu.Unlock()
		return fmt.Errorf("container %s: %w", id, os.ErrNotExist)
	}
	cp := *rec
	r.mu.Unlock()
	cp.StartRequested = true
	if cp.LastGood == nil {
		return fmt.Errorf("container %s has no known spec", id)
	}
	if err := WriteRecord(cp.LastGood.Private, &cp); err != nil {
		return err
	}
	r.mu.Lock()
	r.records[id] = &cp
	r.mu.Unlock()
	r.q.Add(id)
	return nil
}

func hasStep(p Plan, k StepKind) bool {
	for _, s := range p.Steps {
		if s.Kind == k {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// failedIDs are the containers whose file failed: those it declares, as
// far as the broken file tells, and those whose record says they came from
// it (a truncated file tells nothing), unless a valid file declares them.
func failedIDs(set *spec.Set, recs map[string]*Record) map[string]bool {
	ids := set.FailedIDs()
	for id, rec := range recs {
		if f := set.Files[rec.ConfigFile]; f != nil && f.Failed && set.Containers[id] == nil {
			ids[id] = true
		}
	}
	return ids
}
