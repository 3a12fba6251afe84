package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"vzd/templates"
)

func init() {
	var jsonOut, force bool
	register(&command{
		name:  "template",
		args:  "list|build|remove|info [NAME]",
		short: "list, build, remove or describe OS templates",
		long: `Subcommands:
  list            OS templates with their cache state, and application templates
  build NAME      build NAME into the cache (--force rebuilds it)
  remove NAME     delete NAME's cache entries
  info NAME       the definition and cache entry of NAME (an OS or application template)

Building shows a progress bar on a terminal and plain lines otherwise.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&jsonOut, "json", false, "print JSON (list, info, build)")
			fs.BoolVar(&force, "force", false, "build: rebuild even when the cache is current")
		},
		run: func(ctx context.Context, g *globals, args []string) error {
			return runTemplate(ctx, g, args, jsonOut, force)
		},
	})
}

func runTemplate(ctx context.Context, g *globals, args []string, jsonOut, force bool) error {
	// Flags after the subcommand ("template list --json") are accepted
	// too: the flag package stops at the first argument.
	var rest []string
	for _, a := range args {
		switch a {
		case "--json", "-json":
			jsonOut = true
		case "--force", "-force":
			force = true
		default:
			rest = append(rest, a)
		}
	}
	args = rest
	if len(args) == 0 {
		return fmt.Errorf("missing subcommand: list, build, remove or info")
	}
	cache := templates.NewCache(g.paths, g.log)
	need := func(n int) error {
		if len(args) != n+1 {
			return fmt.Errorf("%s takes %d argument(s)", args[0], n)
		}
		return nil
	}
	printJSON := func(v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.stdout, "%s\n", b)
		return err
	}
	switch args[0] {
	case "list", "ls":
		if err := need(0); err != nil {
			return err
		}
		infos, err := cache.List()
		if err != nil {
			return err
		}
		var apps []templates.App
		for _, n := range cache.AppNames() {
			a, _ := cache.AppLookup(n)
			apps = append(apps, a)
		}
		if jsonOut {
			return printJSON(struct {
				OS   []templates.Info `json:"os"`
				Apps []templates.App  `json:"apps"`
			}{infos, apps})
		}
		tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTYPE\tINIT\tBUILT\tSIZE\tDEFHASH")
		for _, in := range infos {
			built, size := "no", "-"
			if in.Built {
				built = in.BuiltAt.Local().Format(time.DateTime)
				size = fmt.Sprintf("%d MiB", in.Size>>20)
			}
			fmt.Fprintf(tw, "%s\tos\t%s\t%s\t%s\t%s\n", in.Name, in.Init, built, size, in.DefHash)
		}
		for _, a := range apps {
			fmt.Fprintf(tw, "%s\tapp\t-\t-\t-\t%s\n", a.Name, strings.Join(a.Packages, ","))
		}
		return tw.Flush()
	case "build":
		if err := need(1); err != nil {
			return err
		}
		in, err := cache.Build(ctx, args[1], force, templates.NewProgress(g.stderr))
		if err != nil {
			return err
		}
		if jsonOut {
			return printJSON(in)
		}
		fmt.Fprintf(g.stdout, "%s: %s (%d MiB)\n", in.Name, in.Path, in.Size>>20)
		return nil
	case "remove", "rm":
		if err := need(1); err != nil {
			return err
		}
		return cache.Remove(args[1])
	case "info":
		if err := need(1); err != nil {
			return err
		}
		if a, ok := cache.AppLookup(args[1]); ok {
			if jsonOut {
				return printJSON(a)
			}
			fmt.Fprintf(g.stdout, "name:         %s (application template)\npackages:     %s\n", a.Name, strings.Join(a.Packages, " "))
			for _, s := range a.PreInstall {
				fmt.Fprintf(g.stdout, "pre-install:  %s\n", s)
			}
			for _, s := range a.PostInstall {
				fmt.Fprintf(g.stdout, "post-install: %s\n", s)
			}
			return nil
		}
		in, err := cache.Info(args[1])
		if err != nil {
			return err
		}
		if jsonOut {
			return printJSON(in)
		}
		fmt.Fprintf(g.stdout, "name:         %s\ndistribution: %s %s %s\ninit:         %s (%s)\ndefhash:      %s\n",
			in.Name, in.Distribution, in.Version, in.Arch, in.Init, in.InitPath, in.DefHash)
		if len(in.Packages) > 0 {
			fmt.Fprintf(g.stdout, "packages:     %s\n", strings.Join(in.Packages, " "))
		}
		if in.Built {
			fmt.Fprintf(g.stdout, "image:        %s (%d MiB; tree %d MiB, %d files)\ntarball:      %s\nbuilt:        %s in %s\n",
				in.Path, in.Size>>20, in.TreeBytes>>20, in.TreeFiles, in.Tarball, in.BuiltAt.Local().Format(time.RFC3339), in.BuildTime)
		} else {
			fmt.Fprintf(g.stdout, "image:        not built (vzd template build %s)\n", in.Name)
		}
		return nil
	}
	return fmt.Errorf("unknown subcommand %q: list, build, remove or info", args[0])
}
