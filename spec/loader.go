package spec

import (
	"bytes"
	"sync"
)

// A Loader is Load with a memory: a file whose bytes are those it had at
// the last load, under a global configuration whose bytes are unchanged
// too, is not parsed and validated again. The agent loads every file on
// every pass and almost none has changed; parsing was most of the cost of
// a load. A regular file whose identity, size and times are those it had
// at the last load, and that last changed more than a moment ago, is not
// even read again. What the loader returns is what Load would. The
// containers it returns are shared between loads: callers must not modify
// them (none does: a spec is a value once loaded).
type Loader struct {
	Paths Paths

	mu      sync.Mutex
	global  []byte // the global file's bytes at the last load; nil when absent
	hasLast bool
	files   map[string]parsedFile
	reads   readMemo
}

type parsedFile struct {
	data   []byte
	format Format
	cs     []*Container
	ids    []string
	diags  Diagnostics
}

// Load is Load(l.Paths).
func (l *Loader) Load() (*Set, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	gr, gdata := readGlobalData(l.Paths)
	if !l.hasLast || !bytes.Equal(gdata, l.global) || (gdata == nil) != (l.global == nil) {
		l.files = map[string]parsedFile{}
	}
	l.global, l.hasLast = gdata, true
	seen := map[string]bool{}
	parse := func(file string, data []byte, p Paths, g *Global, opt ParseOptions) ([]*Container, []string, Diagnostics) {
		seen[file] = true
		if pf, ok := l.files[file]; ok && pf.format == opt.Format && bytes.Equal(pf.data, data) {
			return pf.cs, pf.ids, pf.diags
		}
		cs, ids, diags := parseFile(file, data, p, g, opt)
		l.files[file] = parsedFile{data: data, format: opt.Format, cs: cs, ids: ids, diags: diags}
		return cs, ids, diags
	}
	if l.reads.files == nil {
		l.reads.files = map[string]memoFile{}
	}
	l.reads.seen = map[string]bool{}
	set, err := load(osSource{dir: l.Paths.ConfigDir, p: l.Paths, memo: &l.reads}, l.Paths, gr, parse)
	for name := range l.reads.files {
		if !l.reads.seen[name] {
			delete(l.reads.files, name)
		}
	}
	// Forget files that are gone, so the memory is the directory's size.
	for file := range l.files {
		if !seen[file] {
			delete(l.files, file)
		}
	}
	return set, err
}
