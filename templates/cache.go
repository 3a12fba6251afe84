package templates

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"vzd/spec"
)

// ErrUnknown is returned (wrapped) for a template name this node does not
// know; the message lists the known names.
var ErrUnknown = errors.New("unknown template")

// Info describes one OS template and its cache entry.
type Info struct {
	Name         string    `json:"name"`
	Distribution string    `json:"distribution"`
	Version      string    `json:"version"`
	Arch         string    `json:"arch"`
	Init         string    `json:"init"`
	InitPath     string    `json:"init_path"`
	Packages     []string  `json:"packages,omitempty"`
	DefHash      string    `json:"defhash"`
	Built        bool      `json:"built"`
	Path         string    `json:"path,omitempty"`     // the ready .img
	Presized     string    `json:"presized,omitempty"` // the same image grown to PresizedSize, when there is one
	Tarball      string    `json:"tarball,omitempty"`  // the .tar.gz export
	Size         int64     `json:"size,omitempty"`     // apparent size of the image
	TreeBytes    int64     `json:"tree_bytes,omitempty"`
	TreeFiles    int64     `json:"tree_files,omitempty"`
	StagingPeak  int64     `json:"staging_peak,omitempty"` // bytes the build used at most, for the next progress bar
	BuiltAt      time.Time `json:"built_at,omitzero"`
	BuildTime    string    `json:"build_time,omitempty"`
}

// PresizedSize is the size of the presized copy a build makes of each
// template image: the images actuator's default disk size (a test in
// actuators/templates keeps the two equal). Containers of that size copy
// it and need no resize2fs of their own.
const PresizedSize = 10 << 30

// PresizedPath is the name of the copy of the template image img grown to
// size bytes: <img without .img>.<size>.img, where the images actuator
// (image.PresizedPath) looks for it.
func PresizedPath(img string, size int64) string {
	return strings.TrimSuffix(img, ".img") + "." + strconv.FormatInt(size, 10) + ".img"
}

// Cache is the node's store of built OS templates and fetched application
// packages, under <TemplateDir>/cache and <TemplateDir>/apps.
type Cache struct {
	dir     string // <TemplateDir>/cache
	appsDir string // <TemplateDir>/apps
	log     *slog.Logger
	oses    map[string]OS
	apps    map[string]App
	// EtcApt is where the host's apt sources are read (default /etc/apt).
	EtcApt string
	// BusyboxPath is the static busybox copied into busybox templates
	// (default /bin/busybox, from Debian's busybox-static).
	BusyboxPath string

	// presizeTried holds the entries (base paths) Image tried to add a
	// presized copy to: one try per process, so a failing one is not
	// paid again by every container created.
	presizeTried sync.Map
}

// NewCache returns the cache of the node described by p, knowing the
// built-in templates.
func NewCache(p spec.Paths, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		dir:         filepath.Join(p.TemplateDir(), "cache"),
		appsDir:     filepath.Join(p.TemplateDir(), "apps"),
		log:         log,
		oses:        map[string]OS{},
		apps:        map[string]App{},
		EtcApt:      "/etc/apt",
		BusyboxPath: "/bin/busybox",
	}
	oses, apps := Builtin()
	for _, o := range oses {
		c.oses[o.Name] = o
	}
	for _, a := range apps {
		c.apps[a.Name] = a
	}
	return c
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// AddOS adds or replaces an OS template definition (for tests and local recipes).
func (c *Cache) AddOS(o OS) { c.oses[o.Name] = o }

// AddApp adds or replaces an application template definition.
func (c *Cache) AddApp(a App) { c.apps[a.Name] = a }

// Names returns the known OS template names, sorted.
func (c *Cache) Names() []string { return sortedNames(c.oses) }

// AppNames returns the known application template names, sorted.
func (c *Cache) AppNames() []string { return sortedNames(c.apps) }

// Lookup returns the OS template called name (or one of its aliases),
// with or without the legacy leading dot.
func (c *Cache) Lookup(name string) (OS, bool) {
	n := Normalize(name)
	if o, ok := c.oses[n]; ok {
		return o, true
	}
	for _, o := range c.oses {
		if slices.Contains(o.Aliases, n) {
			return o, true
		}
	}
	return OS{}, false
}

// AppLookup returns the application template called name.
func (c *Cache) AppLookup(name string) (App, bool) {
	a, ok := c.apps[Normalize(name)]
	return a, ok
}

// UnknownOSError returns the validation error for an unknown OS template.
func (c *Cache) UnknownOSError(name string) error {
	return fmt.Errorf("%w %q: known OS templates: %s", ErrUnknown, name, strings.Join(c.Names(), ", "))
}

// UnknownAppError returns the validation error for an unknown application template.
func (c *Cache) UnknownAppError(name string) error {
	return fmt.Errorf("%w %q: known application templates: %s", ErrUnknown, name, strings.Join(c.AppNames(), ", "))
}

func (c *Cache) base(o OS) string { return filepath.Join(c.dir, o.Name+"-"+o.DefHash()) }

// info reads the completion marker of o's current definition.
func (c *Cache) info(o OS) (Info, bool) {
	b, err := os.ReadFile(c.base(o) + ".json")
	if err != nil {
		return c.unbuilt(o), false
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil || in.DefHash != o.DefHash() {
		return c.unbuilt(o), false
	}
	// The paths are where the entry is now, not where it was written
	// (a node prefix may have moved).
	in.Path, in.Tarball = c.base(o)+".img", c.base(o)+".tar.gz"
	st, err := os.Stat(in.Path)
	if err != nil {
		return c.unbuilt(o), false
	}
	in.Size = st.Size()
	in.Presized = ""
	if p := PresizedPath(in.Path, PresizedSize); fileExists(p) {
		in.Presized = p
	}
	return in, true
}

func (c *Cache) unbuilt(o OS) Info {
	return Info{Name: o.Name, Distribution: o.Distribution, Version: o.Version, Arch: o.Arch,
		Init: o.Init, InitPath: o.InitPath, Packages: o.Packages, DefHash: o.DefHash()}
}

// Info returns what the cache knows of the named template.
func (c *Cache) Info(name string) (Info, error) {
	o, ok := c.Lookup(name)
	if !ok {
		return Info{}, c.UnknownOSError(name)
	}
	in, _ := c.info(o)
	return in, nil
}

// List returns every known OS template with its cache state, sorted by name.
func (c *Cache) List() ([]Info, error) {
	var out []Info
	for _, n := range c.Names() {
		in, _ := c.info(c.oses[n])
		out = append(out, in)
	}
	return out, nil
}

// Image returns the path of the ready image of the named template,
// building it first when the cache lacks it (and adding its presized copy
// when an earlier build did not make one). Parallel calls, in this
// process or others, build it once.
func (c *Cache) Image(ctx context.Context, name string, progress Progress) (string, error) {
	o, ok := c.Lookup(name)
	if !ok {
		return "", c.UnknownOSError(name)
	}
	if in, ok := c.info(o); ok {
		if in.Presized == "" && in.Size < PresizedSize {
			c.presize(ctx, o, progress)
		}
		return in.Path, nil
	}
	in, err := c.build(ctx, o, false, progress)
	if err != nil {
		return "", err
	}
	return in.Path, nil
}

// presize adds the presized copy to a built entry that lacks it (one
// built before builds made it; the tree is the same, so the definition
// hash is too). Without it containers of the default size only pay their
// own resize2fs, so a failure is logged, not returned.
func (c *Cache) presize(ctx context.Context, o OS, progress Progress) {
	if _, tried := c.presizeTried.LoadOrStore(c.base(o), true); tried {
		return
	}
	unlock, err := lockFile(ctx, filepath.Join(c.dir, "."+o.Name+".lock"))
	if err != nil {
		c.log.Warn("presize template image", "template", o.Name, "err", err)
		return
	}
	defer unlock()
	in, ok := c.info(o)
	if !ok || in.Presized != "" {
		return // rebuilt or presized while we waited for the lock
	}
	p := PresizedPath(in.Path, PresizedSize)
	if err := makePresized(ctx, in.Path, p, PresizedSize, orDiscard(progress)); err != nil {
		c.log.Warn("presize template image", "template", o.Name, "err", err)
		return
	}
	syncDir(c.dir)
	recache(in.Path) // an older build left it cached in small folios
	c.log.Info("template image presized", "template", o.Name, "path", p, "size", int64(PresizedSize))
}

// Build builds the named template into the cache unless it is there
// already (or force is set) and returns its entry.
func (c *Cache) Build(ctx context.Context, name string, force bool, progress Progress) (Info, error) {
	o, ok := c.Lookup(name)
	if !ok {
		return Info{}, c.UnknownOSError(name)
	}
	return c.build(ctx, o, force, progress)
}

func (c *Cache) build(ctx context.Context, o OS, force bool, progress Progress) (Info, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return Info{}, fmt.Errorf("create template cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(c.dir, "."+o.Name+".lock"))
	if err != nil {
		return Info{}, fmt.Errorf("lock template %s: %w", o.Name, err)
	}
	defer unlock()
	// Someone else may have built it while we waited for the lock.
	if in, ok := c.info(o); ok && !force {
		return in, nil
	}
	c.removeFiles(o.Name, "")
	in, err := c.buildLocked(ctx, o, orDiscard(progress))
	if err != nil {
		return Info{}, fmt.Errorf("build template %s: %w", o.Name, err)
	}
	return in, nil
}

// Remove deletes the cache entries of the named template (every
// definition hash). Removing a template that is not built is not an error.
func (c *Cache) Remove(name string) error {
	o, ok := c.Lookup(name)
	if !ok {
		return c.UnknownOSError(name)
	}
	unlock, err := lockFile(context.Background(), filepath.Join(c.dir, "."+o.Name+".lock"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("lock template %s: %w", o.Name, err)
	}
	defer unlock()
	return c.removeFiles(o.Name, "")
}

// removeFiles deletes the cache files of template name (all hashes but
// keep), the marker first so that no reader sees an entry half gone, and
// leftovers of interrupted builds. The template's lock must be held.
func (c *Cache) removeFiles(name, keep string) error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	rm := func(p string) {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	var rest []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".build-"+name+"-") {
			p := filepath.Join(c.dir, n)
			unmountTree(p)
			rm(p)
			continue
		}
		if !strings.HasPrefix(n, name+"-") || !isHashSuffix(strings.TrimPrefix(n, name+"-")) {
			continue
		}
		if keep != "" && strings.HasPrefix(n, name+"-"+keep+".") && !strings.HasSuffix(n, ".tmp") {
			continue
		}
		if strings.HasSuffix(n, ".json") {
			rm(filepath.Join(c.dir, n))
		} else {
			rest = append(rest, n)
		}
	}
	for _, n := range rest {
		rm(filepath.Join(c.dir, n))
	}
	syncDir(c.dir)
	return errors.Join(errs...)
}

// isHashSuffix reports whether s is "<12 hex>.<ext>", so that removing
// "debian" never touches "debian-12-x86_64-…".
func isHashSuffix(s string) bool {
	h, _, ok := strings.Cut(s, ".")
	if !ok || len(h) != 12 {
		return false
	}
	for _, r := range h {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func writeInfo(path string, in Info) error {
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, append(b, '\n'), 0o644)
}

// lockFile takes an exclusive flock on path, creating it, and waits for it
// until ctx is done. Polling keeps the wait cancellable.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: path, Err: err}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// Validate checks the template names of a container: its OS template
// (with or without the legacy leading dot; empty is allowed) and its
// application templates. The error lists the known names.
func (c *Cache) Validate(ct *spec.Container) error {
	var errs []error
	if ct.OSTemplate != "" {
		if _, ok := c.Lookup(ct.OSTemplate); !ok {
			errs = append(errs, c.UnknownOSError(ct.OSTemplate))
		}
	}
	for _, n := range ct.Templates {
		if _, ok := c.AppLookup(n); !ok {
			errs = append(errs, c.UnknownAppError(n))
		}
	}
	return errors.Join(errs...)
}

// Check reports, at the line that names them, the templates of cs this
// node does not know. Destroyed containers need none.
func (c *Cache) Check(cs ...*spec.Container) spec.Diagnostics {
	var diags spec.Diagnostics
	for _, ct := range cs {
		if ct.State == spec.StateDestroyed {
			continue
		}
		if ct.OSTemplate != "" {
			if _, ok := c.Lookup(ct.OSTemplate); !ok {
				diags.Errorf(ct.PosOf("ostemplate"), "%v", c.UnknownOSError(ct.OSTemplate))
			}
		}
		for _, a := range ct.Templates {
			if _, ok := c.AppLookup(a); !ok {
				diags.Errorf(ct.PosOf("templates"), "%v", c.UnknownAppError(a))
			}
		}
	}
	return diags
}
