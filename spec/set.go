package spec

import (
	"errors"
	"path/filepath"
	"strings"
)

// Paths says where a node keeps things. Prefix is prepended to every
// node path (/vz, /run/vzd) so tests and demos run under a temporary root;
// ConfigDir and GlobalConfig are taken as given.
type Paths struct {
	Prefix       string // default "/"
	ConfigDir    string // default /etc/vz/conf
	GlobalConfig string // default /etc/vz/vz.conf
}

// DefaultPaths are the paths of a production node.
func DefaultPaths() Paths {
	return Paths{Prefix: "/", ConfigDir: "/etc/vz/conf", GlobalConfig: "/etc/vz/vz.conf"}
}

// Host maps a node path such as /vz/private/101 under the prefix.
func (p Paths) Host(path string) string {
	if p.Prefix == "" || p.Prefix == "/" {
		return filepath.Clean(path)
	}
	return filepath.Join(p.Prefix, path)
}

// Logical is the inverse of Host: it strips the prefix from a host path.
func (p Paths) Logical(hostPath string) string {
	if p.Prefix == "" || p.Prefix == "/" {
		return filepath.Clean(hostPath)
	}
	rel, err := filepath.Rel(p.Prefix, hostPath)
	if err != nil || strings.HasPrefix(rel, "..") {
		return filepath.Clean(hostPath)
	}
	return "/" + rel
}

func (p Paths) RunDir() string      { return p.Host("/run/vzd") }
func (p Paths) TemplateDir() string { return p.Host("/vz/template") }
func (p Paths) PFCacheDir() string  { return p.Host("/vz/pfcache") }
func (p Paths) PrivateBase() string { return p.Host("/vz/private") }
func (p Paths) RootBase() string    { return p.Host("/vz/root") }

// Global is the node-wide configuration: vz.conf (legacy) or a global HCL
// file with a defaults block.
type Global struct {
	Source Pos
	// Raw holds the legacy keys of vz.conf after parsing, merged under
	// each legacy container file.
	Raw map[string]string
	// RawPos says where each key of Raw was written.
	RawPos map[string]Pos
	// Defaults are applied to HCL containers where they say nothing (a
	// field counts as said when Defaults.Positions has it). Its Root and
	// Private are templates ("/vz/root/$VEID"), not yet expanded.
	Defaults Container
	Dedup    DedupConfig
}

// DedupConfig configures the shared file cache (see package dedup).
type DedupConfig struct {
	Enabled       bool     // default true
	Schedule      string   // robfig/cron spec; default "@every 1h"
	MinSize       uint64   // bytes; smaller files are not cached (default 4 KiB)
	MaxSize       uint64   // bytes; larger files are not cached (default 256 MiB)
	MinContainers int      // a file must be present in this many containers (default 2)
	Dirs          []string // directories scanned inside containers (default bin lib lib64 sbin usr opt etc)
	CacheSize     uint64   // bytes; size of the cache image (default 4 GiB)
}

// File is what became of one file of the config directory.
type File struct {
	Path    string   `json:"path"`
	IDs     []string `json:"ids,omitempty"`     // containers declared (valid or not, when known)
	Failed  bool     `json:"failed,omitempty"`  // the file had errors; its containers keep their last good spec
	Ignored string   `json:"ignored,omitempty"` // why the file is not a container file
}

// Set is one complete snapshot of the desired state of a node.
type Set struct {
	Global     *Global
	Containers map[string]*Container // valid containers by ID
	Files      map[string]*File      // by path
	Diags      Diagnostics
}

// FailedIDs returns the IDs of containers declared in files that failed,
// so the caller can keep their last good spec.
func (s *Set) FailedIDs() map[string]bool {
	ids := map[string]bool{}
	for _, f := range s.Files {
		if f.Failed {
			for _, id := range f.IDs {
				ids[id] = true
			}
		}
	}
	return ids
}

// Severity of a diagnostic.
type Severity string

const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one problem found in a file, with its position.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	Pos      Pos      `json:"pos"`
	Message  string   `json:"message"`
}

func (d Diagnostic) String() string {
	return d.Pos.String() + ": " + string(d.Severity) + ": " + d.Message
}

// Diagnostics is a list of problems, errors and warnings mixed.
type Diagnostics []Diagnostic

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool {
	for _, d := range ds {
		if d.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Err returns the errors as one error, or nil when there are none.
func (ds Diagnostics) Err() error {
	var errs []error
	for _, d := range ds {
		if d.Severity == SeverityError {
			errs = append(errs, errors.New(d.String()))
		}
	}
	return errors.Join(errs...)
}

// Errorf appends an error at pos.
func (ds *Diagnostics) Errorf(pos Pos, format string, args ...any) {
	*ds = append(*ds, Diagnostic{SeverityError, pos, sprintf(format, args...)})
}

// Warnf appends a warning at pos.
func (ds *Diagnostics) Warnf(pos Pos, format string, args ...any) {
	*ds = append(*ds, Diagnostic{SeverityWarning, pos, sprintf(format, args...)})
}
