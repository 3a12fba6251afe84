// Package templates applies application templates to containers: it
// installs the Debian packages of each template named in the spec, in
// order, runs its scripts inside the container, records what it installed
// inside the container, and removes the packages of templates that left
// the spec.
//
// The record is the file /var/lib/vzd/templates.json inside the
// container's tree, so it travels with the container's image. An install
// or removal first writes a pending entry naming its step; a step that
// fails is undone (the packages it installed are purged) and the entry
// cleared, and when even that fails, or the agent dies mid-way, the entry
// stays and says exactly what state the container is in until the next
// Apply finishes the undo. The undo purges packages; what a template's
// own scripts changed besides is not undone.
//
//	Apply: recover pending ─▶ remove apps gone from spec (reverse order) ─▶ install new apps (spec order)
//	install: fetch debs (host) ─▶ copy ─▶ pre-install ─▶ dpkg -i ─▶ post-install ─▶ record
//	                                         └──── any failure: dpkg --purge what appeared ◀┘
package templates

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"vzd/actuators/internal/safefile"
	"vzd/spec"
	"vzd/templates"
)

// Paths inside the container. Changing them breaks containers that have
// templates applied.
const (
	RecordPath = "/var/lib/vzd/templates.json"
	debDir     = "/var/cache/vzd/debs"
	statusPath = "/var/lib/dpkg/status"
)

// Steps of a pending install, as recorded.
const (
	StepCopy        = "copy"
	StepPreInstall  = "pre-install"
	StepDpkg        = "dpkg"
	StepPostInstall = "post-install"
	StepPurge       = "purge"
)

// undoTimeout bounds the undo of a failed install when the caller's
// context is already done (the agent is stopping).
const undoTimeout = 2 * time.Minute

// Execer runs a command inside a running container. The runtime provides it.
type Execer interface {
	Exec(ctx context.Context, c *spec.Container, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
}

// Record is what the container's record file holds.
type Record struct {
	Applied []Applied `json:"applied"`
	// Kept are packages a removed template installed that other packages
	// still depend on; each later removal tries to purge them again.
	Kept    []string `json:"kept,omitempty"`
	Pending *Pending `json:"pending,omitempty"`
}

// Applied is one installed application template.
type Applied struct {
	Name string `json:"name"`
	// Packages are those this template installed (not those the container
	// had already); removing the template purges them.
	Packages []string `json:"packages"`
	// Wants are the packages the template names itself; they are never
	// purged while it stays applied, whichever template installed them.
	Wants       []string  `json:"wants,omitempty"`
	InstalledAt time.Time `json:"installed_at"`
}

// Pending is an install or removal in progress, or one that failed and
// could not be undone.
type Pending struct {
	Name      string    `json:"name"`
	Op        string    `json:"op"` // "install" or "remove"
	Step      string    `json:"step"`
	Packages  []string  `json:"packages"`         // install: to be installed; remove: to be purged
	Before    []string  `json:"before,omitempty"` // install: packages installed before it started
	Error     string    `json:"error,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// InterruptedError reports a template operation that did not finish and
// was not undone: the container holds part of it.
type InterruptedError struct{ Pending Pending }

func (e *InterruptedError) Error() string {
	p := e.Pending
	s := fmt.Sprintf("%s of application template %s interrupted at step %s (packages %s)",
		p.Op, p.Name, p.Step, strings.Join(p.Packages, " "))
	if p.Error != "" {
		s += ": " + p.Error
	}
	return s
}

// Actuator applies application templates.
type Actuator struct {
	cache *templates.Cache
	exec  Execer
	log   *slog.Logger
	// chroot runs a command in a stopped container's tree.
	chroot func(ctx context.Context, root string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// New returns an actuator fetching packages through cache and running
// commands in running containers through exec.
func New(cache *templates.Cache, exec Execer, log *slog.Logger) *Actuator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Actuator{cache: cache, exec: exec, log: log, chroot: templates.ChrootRun}
}

// Name is the actuator's name in plans and logs.
func (a *Actuator) Name() string { return "templates" }

// State returns the container's record; a container without one has
// nothing applied.
func (a *Actuator) State(ctx context.Context, c *spec.Container) (Record, error) {
	var rec Record
	b, err := safefile.ReadFile(c.Root, RecordPath)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("read template record of %s: %w", c.ID, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("parse template record %s%s: %w", c.Root, RecordPath, err)
	}
	return rec, nil
}

// Applied returns the names of the application templates installed in the
// container, in install order. When an operation was interrupted, the
// names are still valid and err is an *InterruptedError saying what the
// container holds.
func (a *Actuator) Applied(ctx context.Context, c *spec.Container) ([]string, error) {
	rec, err := a.State(ctx, c)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ap := range rec.Applied {
		names = append(names, ap.Name)
	}
	if rec.Pending != nil {
		return names, &InterruptedError{Pending: *rec.Pending}
	}
	return names, nil
}

// Apply makes the container's application templates those of c.Templates:
// it finishes or undoes an interrupted operation, removes templates no
// longer in the spec (last installed first), then installs missing ones in
// spec order. running says whether commands go through the Execer (a
// running container) or a chroot into c.Root (stopped, root mounted).
// Apply is idempotent; with no templates in the spec or the record it
// touches nothing.
func (a *Actuator) Apply(ctx context.Context, c *spec.Container, running bool) error {
	var want []templates.App
	var unknown []error
	for _, n := range c.Templates {
		app, ok := a.cache.AppLookup(n)
		if !ok {
			unknown = append(unknown, a.cache.UnknownAppError(n))
			continue
		}
		want = append(want, app)
	}
	if len(unknown) > 0 {
		return errors.Join(unknown...)
	}
	rec, err := a.State(ctx, c)
	if err != nil {
		return err
	}
	if len(want) == 0 && len(rec.Applied) == 0 && rec.Pending == nil {
		return nil
	}
	s := &session{a: a, c: c, running: running, rec: &rec,
		log: a.log.With("container", c.ID)}
	if rec.Pending != nil {
		if err := s.recover(ctx); err != nil {
			return err
		}
	}
	for i := len(rec.Applied) - 1; i >= 0; i-- {
		name := rec.Applied[i].Name
		if !slices.ContainsFunc(want, func(app templates.App) bool { return app.Name == name }) {
			if err := s.remove(ctx, i); err != nil {
				return err
			}
		}
	}
	for _, app := range want {
		if !slices.ContainsFunc(rec.Applied, func(ap Applied) bool { return ap.Name == app.Name }) {
			if err := s.install(ctx, app); err != nil {
				return err
			}
		}
	}
	return nil
}

// session is one Apply on one container.
type session struct {
	a       *Actuator
	c       *spec.Container
	running bool
	rec     *Record
	log     *slog.Logger
	dirOK   bool
}

// run runs argv inside the container and returns its output.
func (s *session) run(ctx context.Context, argv []string, stdin io.Reader) ([]byte, error) {
	var out bytes.Buffer
	if s.running {
		if s.a.exec == nil {
			return nil, errors.New("no way to run commands in a running container")
		}
		code, err := s.a.exec.Exec(ctx, s.c, argv, stdin, &out, &out)
		if err != nil {
			return out.Bytes(), fmt.Errorf("exec %s: %w", argv[0], err)
		}
		if code != 0 {
			return out.Bytes(), fmt.Errorf("%s exited %d: %s", strings.Join(argv, " "), code, tail(out.Bytes()))
		}
		return out.Bytes(), nil
	}
	if err := s.a.chroot(ctx, s.c.Root, argv, stdin, &out, &out); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, tail(out.Bytes()))
	}
	return out.Bytes(), nil
}

// dpkg runs dpkg in the container. In a stopped container a policy-rc.d
// keeps maintainer scripts from starting services in the chroot (unless
// the container has its own).
func (s *session) dpkg(ctx context.Context, args ...string) error {
	argv := append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/dpkg", "--force-confdef", "--force-confold"}, args...)
	if !s.running {
		const wrap = `p=/usr/sbin/policy-rc.d
own=
if [ ! -e $p ]; then printf '#!/bin/sh\nexit 101\n' > $p && chmod 755 $p && own=1; fi
"$@"; rc=$?
[ -n "$own" ] && rm -f $p
exit $rc`
		argv = append([]string{"/bin/sh", "-c", wrap, "sh"}, argv...)
	}
	_, err := s.run(ctx, argv, nil)
	return err
}

// status reads the container's dpkg status.
func (s *session) status() ([]byte, []string, map[string]string, error) {
	b, err := safefile.ReadFile(s.c.Root, statusPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("container %s has no dpkg (OS template %q): application templates need a Debian-based container", s.c.ID, s.c.OSTemplate)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read dpkg status of %s: %w", s.c.ID, err)
	}
	inst, broken := templates.InstalledPackages(b)
	return b, inst, broken, nil
}

// save writes the record; the directory is made from inside the
// container, so that no link the container planted leads the host astray.
func (s *session) save(ctx context.Context) error {
	if !s.dirOK {
		if _, err := s.run(ctx, []string{"mkdir", "-p", path.Dir(RecordPath)}, nil); err != nil {
			return fmt.Errorf("create %s in %s: %w", path.Dir(RecordPath), s.c.ID, err)
		}
		s.dirOK = true
	}
	b, err := json.MarshalIndent(s.rec, "", "  ")
	if err != nil {
		return err
	}
	if err := safefile.WriteFile(s.c.Root, RecordPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write template record of %s: %w", s.c.ID, err)
	}
	return nil
}

func (s *session) setStep(ctx context.Context, step string) error {
	s.rec.Pending.Step = step
	return s.save(ctx)
}

// install installs app; on failure it purges what appeared and clears the
// pending entry, or, if that fails too, leaves the entry saying so.
func (s *session) install(ctx context.Context, app templates.App) (retErr error) {
	log := s.log.With("app", app.Name)
	status, before, broken, err := s.status()
	if err != nil {
		return err
	}
	if len(broken) > 0 {
		return fmt.Errorf("install %s in %s: dpkg has packages in a broken state: %v", app.Name, s.c.ID, broken)
	}
	if s.c.OSTemplate == "" && slices.ContainsFunc(app.Packages, func(p string) bool { return !templates.IsLocalDeb(p) }) {
		return fmt.Errorf("install %s in %s: the container names no OS template, so its packages cannot be resolved", app.Name, s.c.ID)
	}
	debs, err := s.a.cache.FetchApp(ctx, app, s.c.OSTemplate, status)
	if err != nil {
		return fmt.Errorf("install %s in %s: %w", app.Name, s.c.ID, err)
	}
	var pkgs, wants []string
	for _, d := range debs {
		pkgs = append(pkgs, d.Package)
	}
	for _, p := range app.Packages {
		if templates.IsLocalDeb(p) {
			if i := slices.IndexFunc(debs, func(d templates.Deb) bool { return d.Path == p }); i >= 0 {
				p = debs[i].Package
			}
		}
		wants = append(wants, p)
	}
	log.Info("installing application template", "packages", pkgs, "running", s.running)
	s.rec.Pending = &Pending{Name: app.Name, Op: "install", Step: StepCopy, Packages: pkgs,
		Before: before, StartedAt: time.Now().UTC().Truncate(time.Second)}
	if err := s.save(ctx); err != nil {
		s.rec.Pending = nil
		return err
	}
	defer func() {
		if retErr == nil {
			return
		}
		retErr = fmt.Errorf("install %s in %s at step %s: %w", app.Name, s.c.ID, s.rec.Pending.Step, retErr)
		uctx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			uctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			defer cancel()
		}
		if err := s.undoInstall(uctx); err != nil {
			s.rec.Pending.Error = retErr.Error() + "; undo: " + err.Error()
			if serr := s.save(uctx); serr != nil {
				log.Error("record failed install", "err", serr)
			}
			retErr = &InterruptedError{Pending: *s.rec.Pending}
			return
		}
		retErr = fmt.Errorf("%w (undone: the container is as before)", retErr)
	}()

	var paths []string
	for _, d := range debs {
		f, err := os.Open(d.Path)
		if err != nil {
			return err
		}
		name := filepath.Base(d.Path)
		_, err = s.run(ctx, []string{"/bin/sh", "-c", `mkdir -p "$1" && cat > "$1/$2"`, "sh", debDir, name}, f)
		f.Close()
		if err != nil {
			return err
		}
		paths = append(paths, debDir+"/"+name)
	}
	if err := s.setStep(ctx, StepPreInstall); err != nil {
		return err
	}
	for _, script := range app.PreInstall {
		if _, err := s.run(ctx, []string{"/bin/sh", "-c", script}, nil); err != nil {
			return err
		}
	}
	if err := s.setStep(ctx, StepDpkg); err != nil {
		return err
	}
	if len(paths) > 0 {
		if err := s.dpkg(ctx, append([]string{"-i"}, paths...)...); err != nil {
			return err
		}
	}
	if err := s.setStep(ctx, StepPostInstall); err != nil {
		return err
	}
	for _, script := range app.PostInstall {
		if _, err := s.run(ctx, []string{"/bin/sh", "-c", script}, nil); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, after, broken, err := s.status()
	if err != nil {
		return err
	}
	if len(broken) > 0 {
		return fmt.Errorf("packages left broken: %v", broken)
	}
	s.cleanDebs(ctx)
	s.rec.Applied = append(s.rec.Applied, Applied{Name: app.Name, Packages: minus(after, before),
		Wants: wants, InstalledAt: time.Now().UTC().Truncate(time.Second)})
	s.rec.Pending = nil
	if err := s.save(ctx); err != nil {
		return err
	}
	log.Info("application template installed", "packages", s.rec.Applied[len(s.rec.Applied)-1].Packages)
	return nil
}

func (s *session) cleanDebs(ctx context.Context) {
	if _, err := s.run(ctx, []string{"rm", "-rf", debDir}, nil); err != nil {
		s.log.Warn("remove copied packages", "err", err)
	}
}

// undoInstall purges what the pending install added (installed now but not
// before, or left half-installed) and clears the pending entry.
func (s *session) undoInstall(ctx context.Context) error {
	p := s.rec.Pending
	_, now, broken, err := s.status()
	if err != nil {
		return err
	}
	purge := minus(now, p.Before)
	for pkg := range broken {
		if !slices.Contains(p.Before, pkg) {
			purge = append(purge, pkg)
		}
	}
	s.log.Info("undoing application template install", "app", p.Name, "step", p.Step, "purge", purge)
	if len(purge) > 0 {
		if err := s.dpkg(ctx, append([]string{"--purge"}, purge...)...); err != nil {
			return err
		}
	}
	if _, now, broken, err = s.status(); err != nil {
		return err
	}
	if left := minus(now, p.Before); len(left) > 0 || len(brokenNotIn(broken, p.Before)) > 0 {
		return fmt.Errorf("still installed after purge: %v %v", left, brokenNotIn(broken, p.Before))
	}
	s.cleanDebs(ctx)
	s.rec.Pending = nil
	return s.save(ctx)
}

// recover finishes what a previous Apply left pending: an install is
// undone, a removal completed.
func (s *session) recover(ctx context.Context) error {
	p := s.rec.Pending
	switch p.Op {
	case "install":
		if err := s.undoInstall(ctx); err != nil {
			p.Error = "undo: " + err.Error()
			return &InterruptedError{Pending: *p}
		}
		return nil
	case "remove":
		if err := s.purge(ctx, p.Packages); err != nil {
			p.Error = err.Error()
			return &InterruptedError{Pending: *p}
		}
		s.rec.Applied = slices.DeleteFunc(s.rec.Applied, func(ap Applied) bool { return ap.Name == p.Name })
		s.rec.Pending = nil
		return s.save(ctx)
	}
	return fmt.Errorf("template record of %s: unknown pending op %q", s.c.ID, p.Op)
}

// remove purges the packages of the i-th applied template.
func (s *session) remove(ctx context.Context, i int) error {
	ap := s.rec.Applied[i]
	var wanted []string
	for j, other := range s.rec.Applied {
		if j != i {
			wanted = append(wanted, other.Wants...)
		}
	}
	pkgs := minus(append(append([]string(nil), ap.Packages...), s.rec.Kept...), wanted)
	// A package another template wants passes to that template, so it goes
	// when the last template wanting it goes.
	for _, p := range append(append([]string(nil), ap.Packages...), s.rec.Kept...) {
		if !slices.Contains(wanted, p) {
			continue
		}
		for j := range s.rec.Applied {
			if j != i && slices.Contains(s.rec.Applied[j].Wants, p) {
				s.rec.Applied[j].Packages = append(s.rec.Applied[j].Packages, p)
				break
			}
		}
	}
	s.log.Info("removing application template", "app", ap.Name, "packages", pkgs)
	s.rec.Pending = &Pending{Name: ap.Name, Op: "remove", Step: StepPurge, Packages: pkgs,
		StartedAt: time.Now().UTC().Truncate(time.Second)}
	if err := s.save(ctx); err != nil {
		return err
	}
	if err := s.purge(ctx, pkgs); err != nil {
		s.rec.Pending.Error = err.Error()
		if serr := s.save(context.WithoutCancel(ctx)); serr != nil {
			s.log.Error("record failed removal", "err", serr)
		}
		return &InterruptedError{Pending: *s.rec.Pending}
	}
	s.rec.Applied = slices.Delete(s.rec.Applied, i, i+1)
	s.rec.Pending = nil
	return s.save(ctx)
}

// purge removes pkgs. Packages that other installed packages still depend
// on are kept (dpkg refuses them) and recorded in Kept; anything left
// half-removed is an error.
func (s *session) purge(ctx context.Context, pkgs []string) error {
	_, now, broken, err := s.status()
	if err != nil {
		return err
	}
	var present []string
	for _, p := range pkgs {
		if _, b := broken[p]; b || slices.Contains(now, p) {
			present = append(present, p)
		}
	}
	var dpkgErr error
	if len(present) > 0 {
		dpkgErr = s.dpkg(ctx, append([]string{"--purge"}, present...)...)
	}
	if _, now, broken, err = s.status(); err != nil {
		return err
	}
	var bad []string
	var kept []string
	for _, p := range present {
		if st, b := broken[p]; b {
			bad = append(bad, p+" ("+st+")")
		} else if slices.Contains(now, p) {
			kept = append(kept, p)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("purge left packages broken: %s: %v", strings.Join(bad, ", "), dpkgErr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// dpkg refuses, and says so, to remove a package something else still
	// depends on; any other failure is an error.
	if dpkgErr != nil && (len(kept) == 0 || !strings.Contains(dpkgErr.Error(), "dependency problems")) {
		return fmt.Errorf("purge: %w", dpkgErr)
	}
	if len(kept) > 0 {
		s.log.Info("packages kept: still needed", "packages", kept)
	}
	s.rec.Kept = kept
	return nil
}

// minus returns the elements of a not in b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func brokenNotIn(broken map[string]string, before []string) []string {
	var out []string
	for p := range broken {
		if !slices.Contains(before, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}
