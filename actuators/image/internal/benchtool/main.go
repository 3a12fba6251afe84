// Command benchtool drives package image for scripts/bench-image.sh: each
// subcommand is one operation the benchmark times as a whole process, the
// same way it times the shell tools doing the same work.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"vzd/actuators/image"
	"vzd/spec"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool create|create-mount|mount|unmount|resize|destroy|copy [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	prefix := fs.String("prefix", "", "node prefix")
	id := fs.String("id", "ct", "container id")
	size := fs.String("size", "10G", "disk size (K, M, G suffix)")
	src := fs.String("src", "", "template image")
	fs.Parse(os.Args[2:])
	if err := run(cmd, *prefix, *id, *size, *src, fs.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseUint(strings.TrimRight(s, "KMG"), 10, 64)
	return n * mult, err
}

func run(cmd, prefix, id, size, src string, args []string) error {
	ctx := context.Background()
	if cmd == "copy" {
		if len(args) != 2 {
			return fmt.Errorf("copy SRC DST")
		}
		method, err := image.CopySparse(args[1], args[0])
		if err == nil {
			fmt.Println(method)
		}
		return err
	}
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	paths := spec.Paths{Prefix: prefix}
	a, err := image.New(image.Config{Paths: paths, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	c := &spec.Container{
		ID:      id,
		Private: filepath.Join(paths.PrivateBase(), id),
		Root:    filepath.Join(paths.RootBase(), id),
		Disk:    spec.Disk{Size: n},
	}
	switch cmd {
	case "create":
		return a.Create(ctx, c, src)
	case "create-mount":
		if err := a.Create(ctx, c, src); err != nil {
			return err
		}
		return a.Mount(ctx, c)
	case "mount":
		return a.Mount(ctx, c)
	case "unmount":
		return a.Unmount(ctx, c)
	case "resize":
		pending, err := a.Resize(ctx, c)
		if err == nil && pending {
			fmt.Println("pending")
		}
		return err
	case "destroy":
		return a.Destroy(ctx, c)
	}
	return fmt.Errorf("unknown command %q", cmd)
}
