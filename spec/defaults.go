package spec

import (
	"maps"
	"slices"
	"sort"
	"strings"
)

// inheritable lists the fields a global defaults block (or vz.conf) may
// give a container, keyed by their Positions name. A field the container
// writes itself is never overridden.
var inheritable = []struct {
	key  string
	copy func(dst, src *Container)
}{
	{"onboot", func(d, s *Container) { d.OnBoot = s.OnBoot }},
	{"privileged", func(d, s *Container) { d.Privileged = s.Privileged }},
	{"restart_to_apply", func(d, s *Container) { d.RestartToApply = s.RestartToApply }},
	{"state", func(d, s *Container) { d.State = s.State }},
	{"description", func(d, s *Container) { d.Description = s.Description }},
	{"ostemplate", func(d, s *Container) { d.OSTemplate = s.OSTemplate }},
	{"templates", func(d, s *Container) { d.Templates = slices.Clone(s.Templates) }},
	{"cpu.count", func(d, s *Container) { d.CPU.Count = s.CPU.Count }},
	{"cpu.limit", func(d, s *Container) { d.CPU.Limit = s.CPU.Limit }},
	{"cpu.units", func(d, s *Container) { d.CPU.Units = s.CPU.Units }},
	{"cpu.mask", func(d, s *Container) { d.CPU.Mask = s.CPU.Mask }},
	{"memory.ram", func(d, s *Container) { d.Memory.RAM = s.Memory.RAM }},
	{"memory.swap", func(d, s *Container) { d.Memory.Swap = s.Memory.Swap }},
	{"processes", func(d, s *Container) { d.Processes = s.Processes }},
	{"disk.size", func(d, s *Container) { d.Disk.Size = s.Disk.Size }},
	{"disk.inodes", func(d, s *Container) { d.Disk.Inodes = s.Disk.Inodes }},
	{"disk.iops_limit", func(d, s *Container) { d.Disk.IOPSLimit = s.Disk.IOPSLimit }},
	{"disk.io_limit", func(d, s *Container) { d.Disk.IOLimit = s.Disk.IOLimit }},
	{"network.nameservers", func(d, s *Container) {
		d.Network.Nameservers = slices.Clone(s.Network.Nameservers)
		d.Network.NameserverInherit = s.Network.NameserverInherit
	}},
	{"network.search_domains", func(d, s *Container) { d.Network.SearchDomains = slices.Clone(s.Network.SearchDomains) }},
	{"sysctl", func(d, s *Container) { d.Sysctl = maps.Clone(s.Sysctl) }},
	{"devices", func(d, s *Container) { d.Devices = slices.Clone(s.Devices) }},
	{"stop_timeout", func(d, s *Container) { d.StopTimeout = s.StopTimeout }},
	{"init", func(d, s *Container) { d.Init = slices.Clone(s.Init) }},
	{"root", func(d, s *Container) { d.Root = s.Root }},
	{"private", func(d, s *Container) { d.Private = s.Private }},
	{"uid_base", func(d, s *Container) { d.UIDBase = s.UIDBase }},
	{"gid_base", func(d, s *Container) { d.GIDBase = s.GIDBase }},
	{"dedup", func(d, s *Container) { d.NoDedup = s.NoDedup }},
}

// written reports whether a container wrote a field or any part of it
// ("memory.ram" is written when "memory.ram" is in Positions; "devices"
// when any device is).
func written(c *Container, key string) bool {
	if _, ok := c.Positions[key]; ok {
		return true
	}
	if key == "devices" {
		for k := range c.Positions {
			if strings.HasPrefix(k, "devices.") || k == "device" {
				return true
			}
		}
	}
	return false
}

// applyDefaults fills what c leaves unsaid: first from g's defaults, then
// from the built-in defaults, then expands $VEID and maps paths onto the
// host.
func applyDefaults(c *Container, g *Global, p Paths) {
	if c.Positions == nil {
		c.Positions = map[string]Pos{}
	}
	if g != nil {
		for _, f := range inheritable {
			if written(&g.Defaults, f.key) && !written(c, f.key) {
				f.copy(c, &g.Defaults)
			}
		}
	}
	if c.State == "" {
		c.State = StateRunning
	}
	if c.CPU.Units == 0 && !written(c, "cpu.units") {
		c.CPU.Units = DefaultCPUUnits
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if len(c.Init) == 0 {
		c.Init = []string{DefaultInit}
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if c.UUID == "" && isUUID(c.ID) {
		c.UUID = c.ID
	}
	c.UUID = strings.ToLower(c.UUID)
	if c.Root == "" {
		c.Root = DefaultRootTmpl
	}
	if c.Private == "" {
		c.Private = DefaultPrivateTmpl
	}
	c.Root = p.Host(expandVEID(c.Root, c.ID))
	c.Private = p.Host(expandVEID(c.Private, c.ID))
	normalize(c)
}

// normalize makes equal meanings equal values: empty slices and maps are
// nil, so that hashing and comparisons do not see how a file was written.
func normalize(c *Container) {
	if len(c.Templates) == 0 {
		c.Templates = nil
	}
	if len(c.Sysctl) == 0 {
		c.Sysctl = nil
	}
	if len(c.Devices) == 0 {
		c.Devices = nil
	}
	if len(c.Network.Nameservers) == 0 {
		c.Network.Nameservers = nil
	}
	if len(c.Network.SearchDomains) == 0 {
		c.Network.SearchDomains = nil
	}
	if len(c.Network.Interfaces) == 0 {
		c.Network.Interfaces = nil
	}
	for i := range c.Network.Interfaces {
		if len(c.Network.Interfaces[i].IPs) == 0 {
			c.Network.Interfaces[i].IPs = nil
		}
	}
	if len(c.Unknown) == 0 {
		c.Unknown = nil
	}
}

// sortDiags orders diagnostics by file, line and column, keeping the
// order of equal positions.
func sortDiags(ds Diagnostics) Diagnostics {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i].Pos, ds[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return ds
}

// Sort orders diagnostics by file, line and column.
func (ds Diagnostics) Sort() { sortDiags(ds) }
