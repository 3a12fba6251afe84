package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"vzd/dedup"
	"vzd/spec"
)

// treeFlags collects repeated --tree ID=DIR flags.
type treeFlags map[string]string

func (t treeFlags) String() string { return "" }

func (t treeFlags) Set(v string) error {
	id, dir, ok := strings.Cut(v, "=")
	if !ok || id == "" || dir == "" {
		return fmt.Errorf("want ID=DIR, got %q", v)
	}
	t[id] = dir
	return nil
}

func init() {
	register(&command{
		name:  "pfcache",
		args:  "scan | stats | evict BYTES | mount | umount",
		short: "the shared file cache (dedup): scan now, show statistics",
		long: `scan     hash the eligible files of the containers whose images are mounted,
         store those shared by enough containers and write their stubs;
         the cache is used from each container's next start. --tree ID=DIR
         (repeatable) scans the given mounted images (DIR holds root/)
         instead of the declared containers.
stats    objects, bytes, hit counts, pinned objects and per-container
         savings (--json for scripts).
evict    remove least recently used objects no running container uses
         until BYTES (suffixes K, M, G) are freed.
mount    mount a container root the way the agent does: --id ID --fs DIR
         (the mounted image, holding root/) --root-dir DIR [--no-dedup].
umount   unmount it again: --id ID --root-dir DIR.

Settings come from the dedup block of the global configuration (PFCACHE_*
in vz.conf); see docs/DEDUP.md.`,
		flags: pfFlags,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) == 0 {
				return errors.New("usage: vzd pfcache scan|stats|evict|mount|umount")
			}
			// Flags may also follow the subcommand.
			sub := flag.NewFlagSet("vzd pfcache "+args[0], flag.ContinueOnError)
			sub.SetOutput(g.stderr)
			g.register(sub)
			pfFlags(sub)
			if err := sub.Parse(args[1:]); err != nil {
				return exitError{2}
			}
			args = append(args[:1], sub.Args()...)
			return runPFCache(ctx, g, args)
		},
	})
}

var (
	asJSON   bool
	plainDir bool
	trees    = treeFlags{}
	pfID     string
	pfFS     string
	pfRoot   string
	noDedup  bool
	unpriv   bool
)

func pfFlags(f *flag.FlagSet) {
	f.BoolVar(&asJSON, "json", asJSON, "print JSON for scripts")
	f.BoolVar(&plainDir, "plain-dir", plainDir, "keep the store in a plain directory, not its own image (tests, demos)")
	f.Var(trees, "tree", "ID=DIR: scan this mounted image (repeatable)")
	f.StringVar(&pfID, "id", pfID, "container ID (mount, umount)")
	f.StringVar(&pfFS, "fs", pfFS, "mounted image holding root/ (mount)")
	f.StringVar(&pfRoot, "root-dir", pfRoot, "where to mount the container's root (mount, umount)")
	f.BoolVar(&noDedup, "no-dedup", noDedup, "mount without the cache layers, as for a container with dedup off")
	f.BoolVar(&unpriv, "unprivileged", unpriv, "mount as for an unprivileged container (no cache layers, see docs/DEDUP.md)")
}

func runPFCache(ctx context.Context, g *globals, args []string) error {
	global, diags, err := spec.LoadGlobal(g.paths.GlobalConfig)
	if err != nil {
		global = spec.DefaultGlobal()
	} else if diags.HasErrors() {
		return diags.Err()
	}
	c, err := dedup.New(dedup.Config{Paths: g.paths, Dedup: global.Dedup, Log: g.log, PlainDir: plainDir})
	if err != nil {
		return err
	}
	defer c.Close()
	out := func(v any, text func()) error {
		if asJSON {
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		text()
		return nil
	}
	switch args[0] {
	case "scan":
		t := map[string]string(trees)
		if len(t) == 0 {
			set, err := spec.Load(g.paths)
			if err != nil {
				return err
			}
			t = dedup.Trees(set.Containers)
		}
		st, err := c.Scan(ctx, t)
		if perr := out(st, func() {
			fmt.Fprintf(g.stdout, "containers %d, files %d, hashed %d (%s), digests reused %d\n",
				st.Containers, st.Files, st.HashedFiles, human(st.HashedBytes), st.ReusedDigests)
			fmt.Fprintf(g.stdout, "stored %d (%s), changed while copied %d, no room %d, damaged removed %d\n",
				st.Ingested, human(st.IngestedBytes), st.Changed, st.NoRoom, st.Corrupt)
			fmt.Fprintf(g.stdout, "stubs %d, containers with new stubs (used from their next start) %d, took %s\n",
				st.Stubs, st.MetaBuilt, st.Duration.Round(1e6))
		}); perr != nil {
			return perr
		}
		return err
	case "stats":
		st, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		return out(st, func() {
			fmt.Fprintf(g.stdout, "enabled %v, objects %d, %s of %s, hits %d, pinned %d (%s), saved %s\n",
				st.Enabled, st.Objects, human(st.Bytes), human(st.Capacity), st.Hits, st.Pinned, human(st.PinnedBytes), human(st.SavedBytes))
			if len(st.Containers) == 0 {
				return
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER\tCACHED FILES\tBYTES\tSAVED")
			for _, cs := range st.Containers {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", cs.ID, cs.Objects, human(cs.Bytes), human(cs.SavedBytes))
			}
			tw.Flush()
		})
	case "evict":
		if len(args) != 2 {
			return errors.New("usage: vzd pfcache evict BYTES")
		}
		need, err := parseBytes(args[1])
		if err != nil {
			return err
		}
		freed, err := c.Evict(ctx, need)
		if perr := out(map[string]uint64{"freed": freed}, func() { fmt.Fprintf(g.stdout, "freed %s\n", human(freed)) }); perr != nil {
			return perr
		}
		return err
	case "mount", "umount":
		if pfID == "" || pfRoot == "" || (args[0] == "mount" && pfFS == "") {
			return errors.New("usage: vzd pfcache mount --id ID --fs DIR --root-dir DIR | umount --id ID --root-dir DIR")
		}
		ct := &spec.Container{ID: pfID, Root: pfRoot, NoDedup: noDedup, Privileged: !unpriv}
		if args[0] == "mount" {
			return c.Mounter().MountRoot(ctx, ct, pfFS)
		}
		return c.Mounter().UnmountRoot(ctx, ct)
	}
	return fmt.Errorf("unknown pfcache command %q", args[0])
}

func parseBytes(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bytes %q: %w", s, err)
	}
	return n * mult, nil
}

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
