package reconciler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"vzd/spec"
)

// fakeNode keeps a node's state in memory and records every step.
type fakeNode struct {
	mu      sync.Mutex
	cts     map[string]*fakeCT
	log     []string
	failOn  map[string]error // "id/step" -> error
	nextPid int
}

type fakeCT struct {
	image, mounted, running bool
	pid                     int
	size                    uint64
	apps                    []string
	ram                     uint64
	hostname                string
}

func newFakeNode() *fakeNode {
	return &fakeNode{cts: map[string]*fakeCT{}, failOn: map[string]error{}, nextPid: 100}
}

func (f *fakeNode) ct(id string) *fakeCT {
	c := f.cts[id]
	if c == nil {
		c = &fakeCT{}
		f.cts[id] = c
	}
	return c
}

func (f *fakeNode) step(c *spec.Container, name string, fn func(*fakeCT)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failOn[c.ID+"/"+name]; err != nil {
		f.log = append(f.log, c.ID+" "+name+" FAILED")
		return err
	}
	f.log = append(f.log, c.ID+" "+name)
	fn(f.ct(c.ID))
	return nil
}

func (f *fakeNode) steps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.log...)
	f.log = nil
	return out
}

func (f *fakeNode) Observe(_ context.Context, c *spec.Container) (Actual, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	x := f.cts[c.ID]
	if x == nil {
		return Actual{}, nil
	}
	return Actual{ImageExists: x.image, Mounted: x.mounted, Running: x.running, Pid: x.pid,
		DiskSize: x.size, AppliedApps: x.apps}, nil
}

func (f *fakeNode) CreateImage(_ context.Context, c *spec.Container) error {
	return f.step(c, "create-image", func(x *fakeCT) {
		_ = os.MkdirAll(c.Private, 0o700)
		x.image, x.size = true, c.Disk.Size
	})
}
func (f *fakeNode) Mount(_ context.Context, c *spec.Container) error {
	return f.step(c, "mount", func(x *fakeCT) { x.mounted = true })
}
func (f *fakeNode) Resize(_ context.Context, c *spec.Container) (bool, error) {
	return false, f.step(c, "resize", func(x *fakeCT) { x.size = c.Disk.Size })
}
func (f *fakeNode) ApplyTemplates(_ context.Context, c *spec.Container, running bool) error {
	return f.step(c, "templates", func(x *fakeCT) { x.apps = append([]string(nil), c.Templates...) })
}
func (f *fakeNode) ApplyLimits(_ context.Context, c *spec.Container) error {
	return f.step(c, "limits", func(x *fakeCT) { x.ram = c.Memory.RAM })
}
func (f *fakeNode) Start(_ context.Context, c *spec.Container) error {
	return f.step(c, "start", func(x *fakeCT) {
		if !x.mounted {
			panic("start before mount")
		}
		f.nextPid++
		x.running, x.pid = true, f.nextPid
	})
}
func (f *fakeNode) ApplyNetwork(_ context.Context, c *spec.Container) ([]string, error) {
	return nil, f.step(c, "network", func(x *fakeCT) { x.hostname = c.Hostname })
}
func (f *fakeNode) Stop(_ context.Context, c *spec.Container) error {
	return f.step(c, "stop", func(x *fakeCT) { x.running, x.pid = false, 0 })
}
func (f *fakeNode) Teardown(_ context.Context, c *spec.Container) error {
	return f.step(c, "teardown", func(x *fakeCT) {})
}
func (f *fakeNode) Unmount(_ context.Context, c *spec.Container) error {
	return f.step(c, "unmount", func(x *fakeCT) { x.mounted = false })
}
func (f *fakeNode) Destroy(_ context.Context, c *spec.Container) error {
	return f.step(c, "destroy", func(x *fakeCT) {
		*x = fakeCT{}
		_ = os.RemoveAll(c.Private)
	})
}

// fakeConfig is a config directory held in memory.
type fakeConfig struct {
	mu    sync.Mutex
	paths spec.Paths
	cts   map[string]*spec.Container
	bad   map[string]string // id -> error message: the file is invalid
	err   error
	// anonymous broken files do not tell which containers they declare
	// (an empty file).
	anonymous bool
}

func newFakeConfig(root string) *fakeConfig {
	return &fakeConfig{
		paths: spec.Paths{Prefix: root, ConfigDir: filepath.Join(root, "conf"), GlobalConfig: filepath.Join(root, "vz.conf")},
		cts:   map[string]*spec.Container{},
		bad:   map[string]string{},
	}
}

func (fc *fakeConfig) put(id string, mod func(*spec.Container)) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	c := &spec.Container{
		ID: id, Name: id, State: spec.StateRunning, OnBoot: true,
		Root:    fc.paths.Host("/vz/root/" + id),
		Private: fc.paths.Host("/vz/private/" + id),
		Init:    []string{"/sbin/init"},
		Memory:  spec.Memory{RAM: 256 << 20},
		Disk:    spec.Disk{Size: 1 << 30},
		Source:  spec.Pos{File: filepath.Join(fc.paths.ConfigDir, id+".hcl"), Line: 1},
	}
	if mod != nil {
		mod(c)
	}
	fc.cts[id] = c
	delete(fc.bad, id)
}

func (fc *fakeConfig) remove(id string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	delete(fc.cts, id)
	delete(fc.bad, id)
}

func (fc *fakeConfig) breakFile(id, msg string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	delete(fc.cts, id)
	fc.bad[id] = msg
}

func (fc *fakeConfig) load() (*spec.Set, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.err != nil {
		return nil, fc.err
	}
	s := &spec.Set{Containers: map[string]*spec.Container{}, Files: map[string]*spec.File{}}
	for id, c := range fc.cts {
		cp := *c
		s.Containers[id] = &cp
		s.Files[c.Source.File] = &spec.File{Path: c.Source.File, IDs: []string{id}}
	}
	for id, msg := range fc.bad {
		path := filepath.Join(fc.paths.ConfigDir, id+".hcl")
		s.Files[path] = &spec.File{Path: path, IDs: []string{id}, Failed: true}
		if fc.anonymous {
			s.Files[path].IDs = nil
		}
		s.Diags.Errorf(spec.Pos{File: path, Line: 3, Column: 9}, "%s", msg)
	}
	return s, nil
}

var errInjected = errors.New("injected failure")

func fmtSteps(s []string) string { return fmt.Sprint(s) }
