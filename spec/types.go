package spec

import (
	"fmt"
	"net/netip"
	"time"
)

// State is what an operator wants a container to be.
type State string

// Changing these strings breaks existing config files and state records.
const (
	StateRunning   State = "running"
	StateStopped   State = "stopped"
	StateDestroyed State = "destroyed"
)

// Format names the front end a container was decoded from.
type Format string

const (
	FormatHCL    Format = "hcl"
	FormatLegacy Format = "legacy"
)

// Pos is a position in a source file. Line and Column are 1-based; zero
// means unknown.
type Pos struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Column == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Container is the desired state of one container, whichever format it was
// written in. It is plain data: the zero value of a limit means "no limit"
// (explicit zeros are rejected by validation), and the loader fills defaults.
//
// Paths (Root, Private) are host paths: the loader has already applied the
// node's prefix (see Paths), so actuators use them as they are.
type Container struct {
	// ID is the key of the container on this node: the HCL block label or
	// the legacy file's base name (a UUID or a numeric CTID). It names the
	// private area and root mount point ($VEID in legacy paths).
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"` // display name / alias (legacy NAME)
	UUID        string `json:"uuid,omitempty"`
	Description string `json:"description,omitempty"`

	State      State  `json:"state"`
	OnBoot     bool   `json:"onboot"`
	Hostname   string `json:"hostname,omitempty"`
	Privileged bool   `json:"privileged"`
	// RestartToApply lets the agent restart a running container to apply
	// changes that cannot be applied live. Off by default: such changes
	// stay pending until the container is restarted by other means.
	RestartToApply bool `json:"restart_to_apply"`

	OSTemplate string   `json:"ostemplate,omitempty"` // without the legacy leading dot
	Templates  []string `json:"templates,omitempty"`  // application templates, in order

	CPU       CPU     `json:"cpu"`
	Memory    Memory  `json:"memory"`
	Processes uint64  `json:"processes,omitempty"` // pids limit; 0 = unlimited
	Disk      Disk    `json:"disk"`
	Network   Network `json:"network"`

	Sysctl  map[string]string `json:"sysctl,omitempty"`
	Devices []Device          `json:"devices,omitempty"`

	StopTimeout time.Duration `json:"stop_timeout"`
	Init        []string      `json:"init"` // argv of the container's init

	Root    string `json:"root"`    // host path of the mounted root (VE_ROOT)
	Private string `json:"private"` // host path of the private area (VE_PRIVATE)

	// UIDBase and GIDBase are the first host ids of the container's user
	// namespace (legacy LOCAL_UID/LOCAL_GID). Zero means "allocate one".
	UIDBase uint32 `json:"uid_base,omitempty"`
	GIDBase uint32 `json:"gid_base,omitempty"`

	// NoDedup keeps this container's files out of the shared file cache.
	NoDedup bool `json:"no_dedup,omitempty"`

	// Source is where the container was declared; Positions maps a field
	// path ("memory.ram", "network.interface.eth0.ip") to where its value
	// was written, so diagnostics point at the line.
	Source    Pos            `json:"-"`
	Format    Format         `json:"-"`
	Positions map[string]Pos `json:"-"`
	// Unknown holds legacy keys vzd does not interpret, kept so that
	// nothing an operator wrote is silently lost.
	Unknown map[string]string `json:"-"`
}

// PosOf returns where field was written, or the container's own position
// when the field was not written explicitly.
func (c *Container) PosOf(field string) Pos {
	if p, ok := c.Positions[field]; ok {
		return p
	}
	return c.Source
}

// Interface returns the interface named name, or nil.
func (c *Container) Interface(name string) *Interface {
	for i := range c.Network.Interfaces {
		if c.Network.Interfaces[i].Name == name {
			return &c.Network.Interfaces[i]
		}
	}
	return nil
}

// CPU limits. Zero values mean "not limited".
type CPU struct {
	Count int     `json:"count,omitempty"` // number of CPUs (CFS quota = count × period)
	Limit float64 `json:"limit,omitempty"` // percent of one CPU (150 = 1.5 CPUs)
	Units uint64  `json:"units,omitempty"` // relative weight (legacy CPUUNITS; 1000 is the default)
	Mask  string  `json:"mask,omitempty"`  // cpuset list, "0-1,3"
}

// Memory limits in bytes. Zero means unlimited.
type Memory struct {
	RAM  uint64 `json:"ram,omitempty"`
	Swap uint64 `json:"swap,omitempty"`
}

// Disk describes the container's image and its I/O limits.
type Disk struct {
	Size      uint64 `json:"size,omitempty"`       // bytes; the image's size (hard limit)
	Inodes    uint64 `json:"inodes,omitempty"`     // inode count, fixed when the image is made
	IOPSLimit uint64 `json:"iops_limit,omitempty"` // operations per second
	IOLimit   uint64 `json:"io_limit,omitempty"`   // bytes per second
}

// Network is the container's network configuration.
type Network struct {
	// Nameservers for resolv.conf. NameserverInherit copies the host's.
	Nameservers       []netip.Addr `json:"nameservers,omitempty"`
	NameserverInherit bool         `json:"nameserver_inherit,omitempty"`
	SearchDomains     []string     `json:"search_domains,omitempty"`
	Interfaces        []Interface  `json:"interfaces,omitempty"`
}

// MaxInterfaces is the most interfaces one container may have.
const MaxInterfaces = 15

// Interface is one network interface of a container. An interface without
// a Bridge is routed: the host routes each of its addresses to the host end
// of the veth pair (the Virtuozzo venet style).
type Interface struct {
	Name     string         `json:"name"`             // inside the container, e.g. "eth0"
	Bridge   string         `json:"bridge,omitempty"` // host bridge; empty = routed
	IPs      []netip.Prefix `json:"ips,omitempty"`
	Gateway  netip.Addr     `json:"gateway,omitzero"`
	Gateway6 netip.Addr     `json:"gateway6,omitzero"`
	MAC      string         `json:"mac,omitempty"`       // empty = derived from container and interface
	HostName string         `json:"host_name,omitempty"` // host end; empty = derived
	MTU      int            `json:"mtu,omitempty"`
}

// Routed reports whether the interface is routed rather than bridged.
func (i *Interface) Routed() bool { return i.Bridge == "" }

// Device is a host device node the container may use.
type Device struct {
	Path   string `json:"path"`   // e.g. "/dev/fuse"
	Access string `json:"access"` // subset of "rwm"
}

// Default values applied by the loader where a file says nothing.
const (
	DefaultStopTimeout = 60 * time.Second
	DefaultCPUUnits    = 1000
	DefaultInit        = "/sbin/init"
	DefaultRootTmpl    = "/vz/root/$VEID"
	DefaultPrivateTmpl = "/vz/private/$VEID"
)
