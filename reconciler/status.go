package reconciler

import (
	"context"
	"fmt"
	"sort"
	"time"

	"vzd/spec"
)

// ContainerStatus is what `vzd status` shows of one container.
type ContainerStatus struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	File        string    `json:"file,omitempty"`
	Desired     string    `json:"desired"` // running, stopped, destroyed, undeclared, held
	Actual      string    `json:"actual"`  // running, stopped, absent
	Pid         int       `json:"pid,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	Uptime      string    `json:"uptime,omitempty"`
	AppliedHash string    `json:"applied_hash,omitempty"`
	Pending     []string  `json:"pending,omitempty"`
	Notes       []string  `json:"notes,omitempty"`
	Orphaned    bool      `json:"orphaned,omitempty"`
	// LastError is the error of the last pass, or the first error of the
	// container's file when it is invalid, with ErrorAt as file:line.
	LastError string    `json:"last_error,omitempty"`
	ErrorAt   string    `json:"error_at,omitempty"`
	Synced    time.Time `json:"synced,omitzero"`
	Plan      Plan      `json:"-"`
	// observed is set when the actual state was read after the plan ran.
	observed bool
}

// Status is the agent's whole status.
type Status struct {
	Synced     bool              `json:"synced"`
	Passes     int               `json:"passes"`
	LastPass   time.Time         `json:"last_pass,omitzero"`
	Running    int               `json:"running"`
	Pending    int               `json:"pending"`
	Failed     int               `json:"failed"`
	Containers []ContainerStatus `json:"containers"`
	// Rejected lists the diagnostics of files that were not loaded.
	Rejected []spec.Diagnostic `json:"rejected,omitempty"`
}

func (st *ContainerStatus) fillActual(a Actual) {
	st.observed = false
	st.Pid = 0
	st.StartedAt = time.Time{}
	switch {
	case a.Running:
		st.Actual, st.Pid, st.StartedAt = "running", a.Pid, a.StartedAt
	case a.ImageExists:
		st.Actual = "stopped"
	default:
		st.Actual = "absent"
	}
}

// statusFor returns the status entry of id, creating it.
func (r *Reconciler) statusFor(id string) *ContainerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status[id]
	if st == nil {
		st = &ContainerStatus{ID: id}
		r.status[id] = st
	}
	return st
}

// finishStatus records the outcome of a sync.
func (r *Reconciler) finishStatus(id string, in Input, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status[id]
	if st == nil {
		return
	}
	st.Synced = time.Now()
	st.Orphaned = in.Desired == nil && !in.Held
	switch {
	case in.Held:
		st.Desired = "held"
	case in.Desired == nil:
		st.Desired = "undeclared"
	default:
		st.Desired = string(in.Desired.State)
		st.Name = in.Desired.Name
		st.File = in.Desired.Source.File
	}
	// The record as this sync left it, not as it found it.
	if rec := r.records[id]; rec != nil {
		st.AppliedHash = rec.AppliedHash
		if st.File == "" {
			st.File = rec.ConfigFile
		}
	} else {
		st.AppliedHash = ""
	}
	if _, ok := r.records[id]; !ok && in.Desired != nil && in.Desired.State == spec.StateDestroyed && err == nil {
		st.Actual = "absent"
	}
	st.Pending = st.Plan.Pending
	st.Notes = st.Plan.Notes
	st.LastError, st.ErrorAt = "", ""
	if err != nil {
		st.LastError = err.Error()
		st.ErrorAt = st.File
	}
	if r.failed[id] && r.set != nil {
		// The file is invalid: say where, whatever else happened.
		for path, f := range r.set.Files {
			fromRecord := in.Record != nil && in.Record.ConfigFile == path
			if !f.Failed || (!contains(f.IDs, id) && !fromRecord) {
				continue
			}
			for _, d := range r.set.Diags {
				if d.Severity == spec.SeverityError && d.Pos.File == path {
					st.LastError = "config file invalid: " + d.Message
					if !in.Held {
						st.LastError = "config file invalid (last good spec kept): " + d.Message
					}
					st.ErrorAt = d.Pos.String()
					break
				}
			}
		}
	}
	if err == nil && !st.Plan.isEmpty() && !st.observed {
		// The plan ran: what was observed before it is stale until the
		// next pass; say what it was asked to reach.
		if in.Desired != nil && in.Desired.State == spec.StateRunning && hasStep(st.Plan, StepStart) {
			st.Actual = "running"
		}
		if hasStep(st.Plan, StepStop) {
			st.Actual, st.Pid, st.StartedAt = "stopped", 0, time.Time{}
		}
	}
}

func (p Plan) isEmpty() bool { return len(p.Steps) == 0 }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Status returns a snapshot of the status of every container.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{Passes: r.passes, LastPass: r.lastPass}
	select {
	case <-r.synced:
		s.Synced = true
	default:
	}
	for _, st := range r.status {
		cp := *st
		if !cp.StartedAt.IsZero() && cp.Actual == "running" {
			cp.Uptime = time.Since(cp.StartedAt).Round(time.Second).String()
		}
		switch {
		case cp.LastError != "":
			s.Failed++
		case cp.Actual == "running":
			s.Running++
		}
		if len(cp.Pending) > 0 || (cp.Desired == "running" && cp.Actual != "running" && cp.LastError == "") {
			s.Pending++
		}
		s.Containers = append(s.Containers, cp)
	}
	sort.Slice(s.Containers, func(i, j int) bool { return s.Containers[i].ID < s.Containers[j].ID })
	if r.set != nil {
		for _, d := range r.set.Diags {
			if d.Severity == spec.SeverityError {
				s.Rejected = append(s.Rejected, d)
			}
		}
	}
	return s
}

func (r *Reconciler) publish() {
	if r.cfg.OnChange != nil {
		r.cfg.OnChange()
	}
}

// Snapshot loads the desired state and the records without acting, for
// commands that run beside (or instead of) the agent.
func (r *Reconciler) Snapshot() error {
	set, err := r.cfg.Load()
	if err != nil {
		return err
	}
	recs, _ := ListRecords(r.cfg.Paths.PrivateBase())
	r.mu.Lock()
	r.set, r.desired, r.failed, r.records = set, set.Containers, failedIDs(set, recs), recs
	r.mu.Unlock()
	return nil
}

// IDs lists every container known to the latest snapshot, and which of
// them no file declares.
func (r *Reconciler) IDs() (all []string, undeclared map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	undeclared = map[string]bool{}
	for id := range r.desired {
		seen[id] = true
	}
	for id := range r.failed {
		seen[id] = true
	}
	for id := range r.records {
		if !seen[id] {
			undeclared[id] = true
		}
		seen[id] = true
	}
	for id := range seen {
		all = append(all, id)
	}
	sort.Strings(all)
	return all, undeclared
}

// Plans computes the plan of every known container without acting: the
// `vzd plan` command.
func Plans(ctx context.Context, cfg Config) ([]Plan, error) {
	r := New(cfg)
	if err := r.Snapshot(); err != nil {
		return nil, err
	}
	ids, _ := r.IDs()
	var out []Plan
	for _, id := range ids {
		in, target := r.input(id)
		if target != nil {
			a, err := cfg.Node.Observe(ctx, target)
			if err != nil {
				return nil, fmt.Errorf("observe %s: %w", id, err)
			}
			in.Actual = a
		}
		out = append(out, Make(in))
	}
	return out, nil
}

// Containers returns the valid desired containers of the latest snapshot
// (for the file cache's scans).
func (r *Reconciler) Containers() map[string]*spec.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*spec.Container, len(r.desired))
	for id, c := range r.desired {
		out[id] = c
	}
	return out
}
