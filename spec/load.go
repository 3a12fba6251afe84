package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"

	"vzd/internal/filecache"
)

// MaxFileSize caps what the loader reads of one file: config files are
// small, and a runaway file must not make the agent allocate without bound.
const MaxFileSize = 1 << 20

// classify says whether a directory entry name is a container file, and
// which format; otherwise why it is ignored.
func classify(name string) (format Format, ignored string) {
	switch {
	case strings.HasPrefix(name, "."):
		return "", "dotfile"
	case strings.HasSuffix(name, "~"), strings.HasPrefix(name, "#") && strings.HasSuffix(name, "#"):
		return "", "editor backup"
	case name == "4913":
		return "", "editor probe file"
	case strings.Contains(name, ".dpkg-"), strings.HasSuffix(name, ".rpmnew"), strings.HasSuffix(name, ".rpmsave"),
		strings.HasSuffix(name, ".rpmorig"), strings.HasSuffix(name, ".ucf-dist"), strings.HasSuffix(name, ".ucf-old"):
		return "", "package manager artefact"
	case strings.HasSuffix(name, ".tmp"), strings.HasSuffix(name, ".swp"), strings.HasSuffix(name, ".bak"):
		return "", "temporary file"
	case strings.HasSuffix(name, ".conf-sample"):
		return "", "sample configuration"
	case name == "0.conf":
		return "", "host configuration (CT 0)"
	case strings.HasPrefix(name, "vps.") || strings.Contains(name, ".mount") || strings.Contains(name, ".umount") ||
		strings.HasSuffix(name, ".start") || strings.HasSuffix(name, ".stop") || strings.HasSuffix(name, ".premount") || strings.HasSuffix(name, ".postumount"):
		return "", "action script"
	case strings.HasSuffix(name, ".hcl"):
		return FormatHCL, ""
	case strings.HasSuffix(name, ".conf"):
		if legacyID(name) != "" {
			return FormatLegacy, ""
		}
		return "", "not <UUID>.conf or <CTID>.conf"
	}
	return "", "not a container file (*.hcl, <UUID>.conf, <CTID>.conf)"
}

// IsContainerFile reports whether a name in the config directory is one
// the loader reads (the watcher ignores events on the others).
func IsContainerFile(name string) bool {
	_, ignored := classify(name)
	return ignored == ""
}

// source abstracts how the loader reads the config directory, so unit
// tests can use fstest.MapFS while the agent uses the real directory
// (where ownership and symlinks matter).
type source interface {
	list() ([]fs.DirEntry, error)
	// read returns a file's contents after the StrictModes checks, or
	// why it was refused.
	// A refused regular file's contents may come back with the error,
	// only to learn the IDs it declares.
	read(name string) ([]byte, error)
	// path is the name the file is reported under.
	path(name string) string
}

// Load reads the global configuration and every container file of
// p.ConfigDir. It returns an error only when the directory itself cannot
// be read; problems with single files are in Set.Diags and Set.Files.
func Load(p Paths) (*Set, error) {
	return load(osSource{dir: p.ConfigDir, p: p}, p, readGlobal(p), parseFile)
}

// LoadWithGlobal is Load with a global configuration already read (nil
// means defaults); p.GlobalConfig is not read.
func LoadWithGlobal(p Paths, g *Global) (*Set, error) {
	if g == nil {
		g = DefaultGlobal()
	}
	return load(osSource{dir: p.ConfigDir, p: p}, p, globalResult{g: g}, parseFile)
}

// LoadFS is Load over an fs.FS holding the config directory's files at its
// root. Symlinks are refused (the targets live outside fsys). g is the
// global configuration (nil means defaults).
func LoadFS(fsys fs.FS, p Paths, g *Global, gdiags Diagnostics) (*Set, error) {
	if g == nil {
		g = DefaultGlobal()
	}
	return load(fsSource{fsys: fsys, dir: p.ConfigDir}, p, globalResult{g, gdiags}, parseFile)
}

type globalResult struct {
	g     *Global
	diags Diagnostics
}

// readGlobal reads p.GlobalConfig; a missing file means defaults.
func readGlobal(p Paths) globalResult {
	gr, _ := readGlobalData(p)
	return gr
}

// readGlobalData is readGlobal that also returns the file's bytes (nil
// when it is missing or unreadable).
func readGlobalData(p Paths) (globalResult, []byte) {
	if p.GlobalConfig == "" {
		return globalResult{g: DefaultGlobal()}, nil
	}
	data, err := readCapped(p.GlobalConfig)
	switch {
	case err == nil:
		g, diags := ParseGlobal(p.GlobalConfig, data)
		return globalResult{g, diags}, data
	case errors.Is(err, fs.ErrNotExist):
		return globalResult{g: DefaultGlobal()}, nil
	default:
		var ds Diagnostics
		ds.Errorf(Pos{File: p.GlobalConfig}, "%v", err)
		return globalResult{g: DefaultGlobal(), diags: ds}, nil
	}
}

// LoadGlobal reads and parses a global file: HCL when its name ends in
// .hcl or its content looks like HCL, vz.conf syntax otherwise.
func LoadGlobal(file string) (*Global, Diagnostics, error) {
	data, err := readCapped(file)
	if err != nil {
		return nil, nil, err
	}
	g, diags := ParseGlobal(file, data)
	return g, diags, nil
}

// ParseGlobal parses the contents of a global file.
func ParseGlobal(file string, data []byte) (*Global, Diagnostics) {
	if bytes.IndexByte(data, 0) >= 0 {
		var ds Diagnostics
		ds.Errorf(nulPos(file, data), "file contains NUL bytes")
		return DefaultGlobal(), ds
	}
	if strings.HasSuffix(file, ".hcl") || (!strings.HasSuffix(file, ".conf") && Sniff(data) == FormatHCL) {
		return ParseGlobalHCL(file, data)
	}
	return ParseGlobalLegacy(file, data)
}

func readCapped(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, MaxFileSize)
	}
	return data, nil
}

// Sniff guesses a file's format from its content: a line starting with an
// identifier followed by a block opening or "container" is HCL; KEY=value
// lines are legacy. Comments and blank lines are skipped.
func Sniff(data []byte) Format {
	for _, line := range bytes.Split(data, []byte("\n")) {
		l := bytes.TrimSpace(line)
		if len(l) == 0 || l[0] == '#' || bytes.HasPrefix(l, []byte("//")) || bytes.HasPrefix(l, []byte("/*")) {
			continue
		}
		if bytes.HasPrefix(l, []byte("container")) || bytes.HasPrefix(l, []byte("defaults")) || bytes.HasPrefix(l, []byte("dedup")) {
			return FormatHCL
		}
		if i := bytes.IndexByte(l, '='); i > 0 && bytes.IndexAny(l[:i], " \t{") < 0 {
			return FormatLegacy
		}
		return FormatHCL
	}
	return FormatLegacy
}

// IsGlobalHCL reports whether data is an HCL global file: it has a
// top-level defaults or dedup block.
func IsGlobalHCL(data []byte) bool {
	f, _, _ := parseHCLFile("", data)
	if f == nil {
		return false
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return false
	}
	for _, b := range body.Blocks {
		if b.Type == "defaults" || b.Type == "dedup" {
			return true
		}
	}
	return false
}

// nulPos is where the first NUL byte of data is.
func nulPos(file string, data []byte) Pos {
	i := bytes.IndexByte(data, 0)
	line := 1 + bytes.Count(data[:i], []byte("\n"))
	return Pos{File: file, Line: line, Column: i - bytes.LastIndexByte(data[:i], '\n')}
}

// ParseOptions say how to parse one file given on its own (vzd validate
// FILE), whatever its name.
type ParseOptions struct {
	Format Format // "" sniffs: by extension, then by content
	ID     string // legacy only: the container ID when the name is not <ID>.conf
}

// ParseFile parses and validates one container file on its own: the
// checks that need the whole directory (duplicate addresses, IDs) are not
// run. g may be nil.
func ParseFile(file string, data []byte, p Paths, g *Global, opt ParseOptions) ([]*Container, Diagnostics) {
	cs, _, diags := parseFile(file, data, p, g, opt)
	return cs, diags
}

func parseFile(file string, data []byte, p Paths, g *Global, opt ParseOptions) (cs []*Container, ids []string, diags Diagnostics) {
	if g == nil {
		g = DefaultGlobal()
	}
	if bytes.IndexByte(data, 0) >= 0 {
		diags.Errorf(nulPos(file, data), "file contains NUL bytes")
		return nil, nil, diags
	}
	if len(data) > MaxFileSize {
		diags.Errorf(Pos{File: file}, "file is larger than %d bytes", MaxFileSize)
		return nil, nil, diags
	}
	if len(bytes.TrimSpace(data)) == 0 {
		// An editor that truncates and rewrites in place leaves the
		// file empty for a moment; an empty legacy file would otherwise
		// be a container of nothing but defaults, an empty HCL file one
		// that declares nothing (its containers would stop). Removing a
		// container is done by removing its file.
		diags.Errorf(Pos{File: file}, "file is empty (still being written?); it changes nothing until it has content: remove the file to remove its containers")
		return nil, nil, diags
	}
	format := opt.Format
	if format == "" {
		switch {
		case strings.HasSuffix(file, ".hcl"):
			format = FormatHCL
		case strings.HasSuffix(file, ".conf"):
			format = FormatLegacy
		default:
			format = Sniff(data)
		}
	}
	switch format {
	case FormatHCL:
		cs, ids, diags = ParseHCL(file, data, g, p)
		if len(cs) == 0 && !diags.HasErrors() {
			// Like an empty file: half-written, or everything commented
			// out. Either way its containers keep their last good spec.
			diags.Errorf(Pos{File: file}, "no container blocks (half-written?); it changes nothing: remove the file to remove its containers")
		}
		ids := map[string]bool{}
		for _, c := range cs {
			if ids[c.ID] {
				diags.Errorf(c.Source, "container %q is declared twice in this file", c.ID)
			}
			ids[c.ID] = true
		}
	default:
		id := opt.ID
		if id == "" {
			id = legacyID(file)
		}
		if id == "" {
			diags.Errorf(Pos{File: file}, "cannot tell the container ID from the file name %q (want <UUID>.conf or <CTID>.conf; or pass --id)", filepath.Base(file))
			return nil, nil, diags
		}
		c, ds := ParseLegacy(file, id, data, g, p)
		cs, ids, diags = []*Container{c}, []string{id}, ds
	}
	for _, c := range cs {
		diags = append(diags, Validate(c, p)...)
	}
	return cs, ids, sortDiags(diags)
}

// parseFunc is parseFile, or a Loader's memory of it.
type parseFunc func(file string, data []byte, p Paths, g *Global, opt ParseOptions) ([]*Container, []string, Diagnostics)

func load(src source, p Paths, gr globalResult, parse parseFunc) (*Set, error) {
	entries, err := src.list()
	if err != nil {
		return nil, fmt.Errorf("read config dir %s: %w", p.ConfigDir, err)
	}
	set := &Set{Global: gr.g, Containers: map[string]*Container{}, Files: map[string]*File{}}
	set.Diags = append(set.Diags, gr.diags...)
	type parsed struct {
		file *File
		cs   []*Container
	}
	var files []parsed
	for _, e := range entries {
		name := e.Name()
		fpath := src.path(name)
		f := &File{Path: fpath}
		set.Files[fpath] = f
		format, why := classify(name)
		if p.GlobalConfig != "" && filepath.Clean(fpath) == filepath.Clean(p.GlobalConfig) {
			why = "the global configuration"
		}
		if why != "" {
			f.Ignored = why
			continue
		}
		if format == FormatLegacy {
			f.IDs = []string{legacyID(name)}
		} else if id := strings.TrimSuffix(name, ".hcl"); checkName(id) == "" {
			// A guess until the file parses: the agent keeps the
			// last good spec of these IDs if the file is unreadable.
			f.IDs = []string{id}
		}
		data, err := src.read(name)
		if err != nil {
			f.Failed = true
			set.Diags.Errorf(Pos{File: fpath}, "%v", err)
			if format == FormatHCL && data != nil {
				// Only to learn which containers the refused file
				// declares, so they keep their last good spec.
				if _, ids, _ := ParseHCL(fpath, data, nil, p); len(safeIDs(ids)) > 0 {
					f.IDs = safeIDs(ids)
				}
			}
			continue
		}
		cs, ids, diags := parse(fpath, data, p, gr.g, ParseOptions{Format: format})
		if format == FormatHCL && (len(safeIDs(ids)) > 0 || !diags.HasErrors()) {
			// What the file declares; the guess from its name stays
			// only when a broken file shows no labels at all.
			f.IDs = safeIDs(ids)
		}
		set.Diags = append(set.Diags, diags...)
		if diags.HasErrors() {
			f.Failed = true
			continue
		}
		files = append(files, parsed{f, cs})
	}
	// A container declared in a file that failed and again in a good file
	// is held too: which one is meant cannot be known until the broken
	// file is fixed, and the broken one's last good spec may be running.
	heldBy := map[string]string{}
	for _, f := range set.Files {
		if f.Failed {
			for _, id := range f.IDs {
				heldBy[id] = f.Path
			}
		}
	}
	for _, pf := range files {
		for _, c := range pf.cs {
			if other, ok := heldBy[c.ID]; ok {
				set.Diags.Errorf(c.Source, "container %s is also declared in %s, which has errors; neither is applied", c.ID, other)
				pf.file.Failed = true
			}
		}
	}
	// Cross-file checks: an ID, name, UUID, private area or address
	// claimed twice fails every file claiming it; neither wins.
	type claim struct {
		file *File
		pos  Pos
	}
	claims := map[string][]claim{}
	claimKeys := []string{}
	add := func(key string, f *File, pos Pos) {
		for _, c := range claims[key] {
			if c.file == f && c.pos == pos {
				return
			}
		}
		if _, ok := claims[key]; !ok {
			claimKeys = append(claimKeys, key)
		}
		claims[key] = append(claims[key], claim{f, pos})
	}
	for _, pf := range files {
		for _, c := range pf.cs {
			cl := claimsOf(c)
			keys := make([]string, 0, len(cl))
			for k := range cl {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				add(k, pf.file, cl[k])
			}
		}
	}
	for _, key := range claimKeys {
		cl := claims[key]
		if len(cl) < 2 {
			continue
		}
		for i, c := range cl {
			var others []string
			for j, o := range cl {
				if i != j {
					others = append(others, o.pos.String())
				}
			}
			set.Diags.Errorf(c.pos, "%s is also claimed at %s; neither is applied", key, strings.Join(others, ", "))
			c.file.Failed = true
		}
	}
	for _, pf := range files {
		if pf.file.Failed {
			continue
		}
		for _, c := range pf.cs {
			set.Containers[c.ID] = c
		}
	}
	set.Diags = sortDiags(set.Diags)
	return set, nil
}

// safeIDs drops IDs that are not valid path components: File.IDs may be
// used to look up records on disk.
func safeIDs(ids []string) []string {
	var out []string
	for _, id := range ids {
		if checkName(id) == "" {
			out = append(out, id)
		}
	}
	return out
}

// claimsOf lists what a container claims for itself on the node, each
// with where it was written.
func claimsOf(c *Container) map[string]Pos {
	m := map[string]Pos{"container ID or name " + c.ID: c.Source}
	if c.Name != c.ID {
		m["container ID or name "+c.Name] = c.PosOf("name")
	}
	if c.UUID != "" {
		m["uuid "+c.UUID] = c.PosOf("uuid")
	}
	m["private area "+c.Private] = c.PosOf("private")
	m["root "+c.Root] = c.PosOf("root")
	for _, ifc := range c.Network.Interfaces {
		for _, ip := range ifc.IPs {
			key := "address " + ip.Addr().String()
			if _, dup := m[key]; !dup {
				m[key] = c.PosOf("network.interface." + ifc.Name + ".ip")
			}
		}
	}
	return m
}

// Conflicts reports what the containers cs claim (ID or name, UUID,
// private area, root, address) that a container of others already claims.
// A container of others with the ID of one of cs is skipped: cs replaces
// it. This is how `vzd validate FILE` checks a new file against the
// config directory before it is put in place.
func Conflicts(cs []*Container, others map[string]*Container) Diagnostics {
	var diags Diagnostics
	replaced := map[string]bool{}
	for _, c := range cs {
		replaced[c.ID] = true
	}
	type owner struct {
		c   *Container
		pos Pos
	}
	taken := map[string]owner{}
	ids := make([]string, 0, len(others))
	for id := range others {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if o := others[id]; !replaced[id] {
			for k, pos := range claimsOf(o) {
				taken[k] = owner{o, pos}
			}
		}
	}
	for _, c := range cs {
		for k, pos := range claimsOf(c) {
			if o, ok := taken[k]; ok {
				diags.Errorf(pos, "%s is already claimed by container %s at %s", k, o.c.ID, o.pos)
			}
		}
	}
	return sortDiags(diags)
}

// osSource reads the real config directory with sshd StrictModes-like
// checks, and follows a symlink only into the private areas (the legacy
// layout links /etc/vz/conf/<ID>.conf to $VE_PRIVATE/ve.conf).
type osSource struct {
	dir  string
	p    Paths
	memo *readMemo // nil: read every file
}

// readMemo remembers the bytes of the regular files read, by name and the
// file's identity and times, so that a loader looking at an unchanged
// directory lstats each file instead of opening and reading it. A file
// changed in the last seconds is always read (filecache.Key.Settled).
type readMemo struct {
	files map[string]memoFile
	seen  map[string]bool
}

type memoFile struct {
	key  filecache.Key
	data []byte
}

func (s osSource) list() ([]fs.DirEntry, error) {
	entries, err := os.ReadDir(s.dir)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	return entries, err
}

func (s osSource) path(name string) string { return filepath.Join(s.dir, name) }

func (s osSource) read(name string) ([]byte, error) {
	full := s.path(name)
	fi, err := os.Lstat(full)
	if err != nil {
		return nil, err
	}
	target := full
	if s.memo != nil && fi.Mode().IsRegular() {
		s.memo.seen[name] = true
		if k, ok := filecache.KeyOf(fi); ok {
			if m, ok := s.memo.files[name]; ok && m.key == k {
				return m.data, nil
			}
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		resolved, err := filepath.EvalSymlinks(full)
		if err != nil {
			return nil, fmt.Errorf("refused: symlink: %w", err)
		}
		base, err := filepath.EvalSymlinks(s.p.PrivateBase())
		if err != nil {
			base = s.p.PrivateBase()
		}
		if !inside(resolved, base) {
			return nil, fmt.Errorf("refused: symlink to %s, outside %s", resolved, s.p.PrivateBase())
		}
		target = resolved
	}
	f, err := os.OpenFile(target, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("refused: %w", err)
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, err
	}
	if why := strictModes(fi); why != "" {
		return peekRefused(f, fi), fmt.Errorf("refused: %s", why)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("refused: larger than %d bytes", MaxFileSize)
	}
	// Remember a regular file (not a link's target: the link may change
	// where it points without the target changing) once it has settled.
	if s.memo != nil && target == full {
		if k, ok := filecache.KeyOf(fi); ok && k.Settled(time.Now()) && k.Size == int64(len(data)) {
			s.memo.files[name] = memoFile{key: k, data: data}
		}
	}
	return data, nil
}

// peekRefused reads a refused regular file (capped) only so that the
// loader can tell which containers it declares; nothing in it is applied.
func peekRefused(f io.Reader, fi fs.FileInfo) []byte {
	if !fi.Mode().IsRegular() {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil || len(data) > MaxFileSize || bytes.IndexByte(data, 0) >= 0 {
		return nil
	}
	return data
}

// strictModes returns why a file may not be trusted, like sshd's
// StrictModes: it must be a regular file, owned by root when the agent runs
// as root, and not writable by group or others.
func strictModes(fi fs.FileInfo) string {
	if !fi.Mode().IsRegular() {
		return "not a regular file"
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Sprintf("writable by group or others (mode %04o); chmod go-w", fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && st.Uid != 0 {
		return fmt.Sprintf("owned by uid %d, not root", st.Uid)
	}
	return ""
}

type fsSource struct {
	fsys fs.FS
	dir  string
}

func (s fsSource) list() ([]fs.DirEntry, error) { return fs.ReadDir(s.fsys, ".") }

func (s fsSource) path(name string) string {
	if s.dir == "" {
		return name
	}
	return path.Join(s.dir, name)
}

func (s fsSource) read(name string) ([]byte, error) {
	if rl, ok := s.fsys.(fs.ReadLinkFS); ok {
		if fi, err := rl.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, errors.New("refused: symlink")
		}
	}
	f, err := s.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if why := strictModes(fi); why != "" {
		return peekRefused(f, fi), fmt.Errorf("refused: %s", why)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("refused: larger than %d bytes", MaxFileSize)
	}
	return data, nil
}
