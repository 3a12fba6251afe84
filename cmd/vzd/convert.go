package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"

	"vzd/spec"
)

func init() {
	var id string
	register(&command{
		name:  "convert",
		args:  "FILE.conf",
		short: "print the HCL equivalent of a legacy ve.conf",
		long: `Reads a legacy container file (ve.conf syntax), merges the global vz.conf
under it (--global-config) as the agent would, and prints the same
container as an HCL file on standard output. The result has the same spec
hash: replacing the legacy file with it changes nothing on the node.
Fields at their default values are left out; legacy keys vzd does not use
are reported on standard error and dropped.

The container ID comes from the file name (<UUID>.conf or <CTID>.conf);
--id gives it for a file named otherwise. Exits 1 without output if the
file has errors.`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&id, "id", "", "container ID, when the file name is not <ID>.conf")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: vzd convert [--id ID] FILE.conf")
			}
			return runConvert(g, args[0], id)
		},
	})
}

func runConvert(g *globals, file, id string) error {
	global := spec.DefaultGlobal()
	var diags spec.Diagnostics
	if g.paths.GlobalConfig != "" {
		gl, gd, err := spec.LoadGlobal(g.paths.GlobalConfig)
		switch {
		case err == nil:
			global = gl
			diags = append(diags, gd...)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("read global config: %w", err)
		}
	}
	data, err := readFileCapped(file)
	if err != nil {
		return err
	}
	cs, fd := spec.ParseFile(file, data, g.paths, global, spec.ParseOptions{Format: spec.FormatLegacy, ID: id})
	diags = append(diags, fd...)
	diags.Sort()
	printDiags(g.stderr, diags)
	if diags.HasErrors() || len(cs) == 0 {
		return exitError{1}
	}
	_, err = g.stdout.Write(spec.WriteHCL(cs, g.paths, global))
	return err
}
