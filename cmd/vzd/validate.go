package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"vzd/spec"
	"vzd/templates"
)

type validateFlags struct {
	json   bool
	quiet  bool
	format string
	id     string
}

func init() {
	var vf validateFlags
	register(&command{
		name:  "validate",
		args:  "[PATH...]",
		short: "check config files and print their errors with file:line:column",
		long: `Parses and validates container files without changing anything. Each PATH
is a file or a directory; with none, the config directory (--config-dir).
The global configuration (--global-config) is checked too, and its
defaults apply. A directory is loaded the way the agent loads it: ignored
files are skipped, unsafe files refused, and conflicts between files (the
same ID, name, UUID, private area or address) reported against each file.

Every problem is printed as "file:line:col: error|warning: message",
sorted by file and line. The exit status is 1 if there is any error, 0
otherwise (warnings, such as unknown legacy keys, do not fail).

A single file may have any name: --format says how to read it (auto looks
at the extension, then the content), and --id gives the container ID of a
legacy file whose name is not <UUID>.conf or <CTID>.conf. This makes it
usable as Ansible's "validate: vzd validate --id 101 %s". A single file
is also checked against the containers of the config directory (except
those it replaces, with the same IDs), so it cannot take another's
address, UUID or name. A file named vz.conf, the --global-config file
itself, or HCL with a defaults or dedup block is checked as a global file.

--json prints a JSON array of {severity, file, line, column, message}
instead, for tools; -q prints nothing.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&vf.json, "json", false, "print the diagnostics as a JSON array")
			fs.BoolVar(&vf.quiet, "q", false, "print nothing; only the exit status tells")
			fs.StringVar(&vf.format, "format", "auto", "format of single files: hcl, legacy or auto")
			fs.StringVar(&vf.id, "id", "", "container ID of a single legacy file whose name is not <ID>.conf")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			return runValidate(g, vf, args)
		},
	})
}

// jsonDiag is one diagnostic as `vzd validate --json` prints it.
type jsonDiag struct {
	Severity string `json:"severity"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Column   int    `json:"column"`
	Message  string `json:"message"`
}

func runValidate(g *globals, vf validateFlags, args []string) error {
	var format spec.Format
	switch vf.format {
	case "auto", "":
	case "hcl":
		format = spec.FormatHCL
	case "legacy":
		format = spec.FormatLegacy
	default:
		return fmt.Errorf("--format %q: want hcl, legacy or auto", vf.format)
	}
	diags, containers, err := validatePaths(g.paths, args, spec.ParseOptions{Format: format, ID: vf.id})
	if err != nil {
		return err
	}
	diags.Sort()
	switch {
	case vf.quiet:
	case vf.json:
		out := make([]jsonDiag, 0, len(diags))
		for _, d := range diags {
			out = append(out, jsonDiag{string(d.Severity), d.Pos.File, d.Pos.Line, d.Pos.Column, d.Message})
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(out); err != nil {
			return err
		}
	default:
		printDiags(g.stdout, diags)
		nerr := 0
		for _, d := range diags {
			if d.Severity == spec.SeverityError {
				nerr++
			}
		}
		fmt.Fprintf(g.stderr, "%d containers checked, %d errors, %d warnings\n", containers, nerr, len(diags)-nerr)
	}
	if diags.HasErrors() {
		return exitError{1}
	}
	return nil
}

func printDiags(w io.Writer, diags spec.Diagnostics) {
	for _, d := range diags {
		fmt.Fprintln(w, d.String())
	}
}

// validatePaths checks the global file and every path, and returns all
// diagnostics and how many containers were checked.
func validatePaths(p spec.Paths, args []string, opt spec.ParseOptions) (spec.Diagnostics, int, error) {
	var diags spec.Diagnostics
	global := spec.DefaultGlobal()
	if p.GlobalConfig != "" {
		gl, gd, err := spec.LoadGlobal(p.GlobalConfig)
		switch {
		case err == nil:
			global = gl
			diags = append(diags, gd...)
		case !errors.Is(err, fs.ErrNotExist):
			diags.Errorf(spec.Pos{File: p.GlobalConfig}, "%v", err)
		}
	}
	if len(args) == 0 {
		args = []string{p.ConfigDir}
	}
	n := 0
	for _, arg := range args {
		fi, err := os.Stat(arg)
		if err != nil {
			diags.Errorf(spec.Pos{File: arg}, "%v", errors.Unwrap(err))
			continue
		}
		if fi.IsDir() {
			dp := p
			dp.ConfigDir = arg
			// The same checks as the agent's: StrictModes, symlink
			// rules and conflicts between files.
			set, err := spec.LoadWithGlobal(dp, global)
			if err != nil {
				diags.Errorf(spec.Pos{File: arg}, "%v", err)
				continue
			}
			diags = append(diags, set.Diags...)
			n += len(set.Containers)
			cs := make([]*spec.Container, 0, len(set.Containers))
			for _, c := range set.Containers {
				cs = append(cs, c)
			}
			diags = append(diags, templateDiags(p, cs)...)
			continue
		}
		data, err := readFileCapped(arg)
		if err != nil {
			diags.Errorf(spec.Pos{File: arg}, "%v", err)
			continue
		}
		if isGlobalFile(arg, p, data, opt.Format) {
			if filepath.Clean(arg) != filepath.Clean(p.GlobalConfig) { // else checked above
				_, gd := spec.ParseGlobal(arg, data)
				diags = append(diags, gd...)
			}
			continue
		}
		cs, fd := spec.ParseFile(arg, data, p, global, opt)
		diags = append(diags, fd...)
		n += len(cs)
		if !fd.HasErrors() {
			diags = append(diags, conflictsWithDir(p, global, arg, cs)...)
			diags = append(diags, templateDiags(p, cs)...)
		}
	}
	return diags, n, nil
}

// templateDiags reports template names this node does not know, as the
// agent does (so `validate:` in Ansible refuses them before they land).
func templateDiags(p spec.Paths, cs []*spec.Container) spec.Diagnostics {
	return templates.NewCache(p, slog.New(slog.DiscardHandler)).Check(cs...)
}

// conflictsWithDir checks a file given on its own against the containers
// of the config directory (when there is one), so that a file about to be
// installed (Ansible's validate) cannot take another container's address,
// UUID or name. The containers of the file itself, or with the same IDs,
// are not compared: the file replaces them.
func conflictsWithDir(p spec.Paths, g *spec.Global, file string, cs []*spec.Container) spec.Diagnostics {
	if len(cs) == 0 {
		return nil
	}
	if fi, err := os.Stat(p.ConfigDir); err != nil || !fi.IsDir() {
		return nil
	}
	set, err := spec.LoadWithGlobal(p, g)
	if err != nil {
		return nil
	}
	abs, _ := filepath.Abs(file)
	others := map[string]*spec.Container{}
	for id, c := range set.Containers {
		if cf, _ := filepath.Abs(c.Source.File); cf != abs {
			others[id] = c
		}
	}
	return spec.Conflicts(cs, others)
}

// isGlobalFile tells a global file given as a PATH from a container file:
// the --global-config file itself, a file named vz.conf, or HCL with a
// defaults or dedup block.
func isGlobalFile(path string, p spec.Paths, data []byte, format spec.Format) bool {
	switch {
	case p.GlobalConfig != "" && filepath.Clean(path) == filepath.Clean(p.GlobalConfig):
		return true
	case filepath.Base(path) == "vz.conf":
		return true
	case format != spec.FormatLegacy && (filepath.Ext(path) == ".hcl" || spec.Sniff(data) == spec.FormatHCL):
		return spec.IsGlobalHCL(data)
	}
	return false
}

func readFileCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, spec.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > spec.MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", spec.MaxFileSize)
	}
	return data, nil
}
