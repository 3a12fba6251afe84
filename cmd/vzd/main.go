// Command vzd is the vzd node agent and its command-line interface.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"vzd/actuators/runtime"
	"vzd/spec"
)

// command is one subcommand. Each lives in its own file and registers
// itself from an init function in that file.
type command struct {
	name  string
	args  string // synopsis of the arguments, for usage
	short string // one line for `vzd --help`
	long  string // more text for `vzd CMD --help`
	// hidden commands (the re-executed init and supervisor) are not listed.
	hidden bool
	flags  func(fs *flag.FlagSet)
	run    func(ctx context.Context, g *globals, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// globals are the flags every command takes.
type globals struct {
	paths    spec.Paths
	logLevel string
	// hostNetns is the network namespace of the node side of container
	// links (bridges, host ends, routes): "" is the agent's own. The demo
	// and the tests use a namespace of their own, so nothing reaches the
	// host's network.
	hostNetns string
	// uplink is the node's interface on the routed containers' network:
	// proxy ARP/NDP entries for their addresses go there.
	uplink string
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.paths.Prefix, "root", g.paths.Prefix, "prefix for /vz and /run/vzd (for tests and demos)")
	fs.StringVar(&g.paths.ConfigDir, "config-dir", g.paths.ConfigDir, "directory of container files")
	fs.StringVar(&g.paths.GlobalConfig, "global-config", g.paths.GlobalConfig, "global configuration (legacy vz.conf or HCL)")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "debug, info, warn or error")
	fs.StringVar(&g.uplink, "uplink", g.uplink, "node interface that answers ARP/NDP for routed container addresses (proxy entries); default none")
	fs.StringVar(&g.hostNetns, "host-netns", g.hostNetns, "network namespace (path, e.g. /run/netns/NAME) for the node side of container links; default the agent's own")
}

// exitError ends the program with a code and no further message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// A re-executed supervisor or container init stage runs here and
	// never returns.
	if runtime.Main() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{paths: spec.DefaultPaths(), logLevel: "info", stdout: stdout, stderr: stderr}
	top := flag.NewFlagSet("vzd", flag.ContinueOnError)
	top.SetOutput(stderr)
	g.register(top)
	// Usage is printed below, once, on stdout for --help; a bad flag only
	// gets the flag package's one-line error and a hint.
	top.Usage = func() {}
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, top)
			return 0
		}
		fmt.Fprintln(stderr, "run 'vzd --help' for usage")
		return 2
	}
	rest := top.Args()
	if len(rest) == 0 {
		usage(stderr, top)
		return 2
	}
	if rest[0] == "help" {
		if len(rest) > 1 {
			rest = []string{rest[1], "--help"}
		} else {
			usage(stdout, top)
			return 0
		}
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "vzd: unknown command %q; run 'vzd --help' for the list\n", rest[0])
		return 2
	}
	fs := flag.NewFlagSet("vzd "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {}
	if err := fs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmdUsage(stdout, cmd, fs)
			return 0
		}
		fmt.Fprintf(stderr, "run 'vzd %s --help' for usage\n", cmd.name)
		return 2
	}
	g.log = newLogger(stderr, g.logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, g, fs.Args()); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintf(stderr, "vzd %s: %v\n", cmd.name, err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "vzd: a declarative node agent for system containers\n\nUsage:\n  vzd [global flags] COMMAND [flags] [args]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].short)
	}
	fmt.Fprintf(w, "\nGlobal flags (accepted by every command too):\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nRun 'vzd COMMAND --help' for a command's own flags.\n")
}

func cmdUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: vzd %s [flags] %s\n\n%s\n", c.name, c.args, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	fmt.Fprintf(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}
