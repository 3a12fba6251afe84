package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"vzd/internal/node"
	"vzd/spec"
)

// newNode builds the real node from the global config.
func newNode(_ context.Context, g *globals) (*node.Node, func(), error) {
	return newNodeWith(g, 0)
}

// newNodeWith is newNode with the period of limits drift checks (0: at
// every observation, what one-shot commands want).
func newNodeWith(g *globals, driftEvery time.Duration) (*node.Node, func(), error) {
	global, diags, err := spec.LoadGlobal(g.paths.GlobalConfig)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		global = spec.DefaultGlobal() // no vz.conf: defaults
	case err != nil:
		return nil, nil, fmt.Errorf("global config: %w", err)
	}
	for _, d := range diags {
		g.log.Warn("global config", "diag", d.String())
	}
	n, err := node.New(node.Config{Paths: g.paths, Global: global, Log: g.log, HostNS: g.hostNetns, Uplink: g.uplink, DriftInterval: driftEvery})
	if err != nil {
		return nil, nil, err
	}
	return n, func() { _ = n.Close() }, nil
}
