package spec

import (
	"fmt"

	"github.com/robfig/cron/v3"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Validation is a list of small checks, one per concern, in the manner of
// runc's libcontainer/configs/validate. Each reports against the position
// of the field it checks. Cross-container checks (duplicate IDs, UUIDs,
// private areas and addresses) live in load.go, since they need the whole
// directory.

type check func(c *Container, p Paths, ds *Diagnostics)

var checks = []check{
	checkID, checkState, checkSizes, checkCPU, checkHostname, checkNetwork,
	checkSysctl, checkTemplates, checkPaths, checkDevices, checkUUID, checkInit,
}

// Validate checks one container on its own and returns what is wrong.
func Validate(c *Container, p Paths) Diagnostics {
	var ds Diagnostics
	for _, ch := range checks {
		ch(c, p, &ds)
	}
	return sortDiags(ds)
}

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
	TiB = 1 << 40

	MinDiskSize  = 64 * MiB
	MaxDiskSize  = 64 * TiB
	MaxRAM       = 16 * TiB
	MaxCPUs      = 4096
	MinCPUUnits  = 8 // vzctl's range for CPUUNITS
	MaxCPUUnits  = 500000
	MaxIDLength  = 64
	MaxProcesses = 1 << 22 // the kernel's PID_MAX_LIMIT
)

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// checkName reports why s cannot be a path component, or "".
func checkName(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > MaxIDLength:
		return fmt.Sprintf("is longer than %d characters", MaxIDLength)
	case strings.ContainsRune(s, 0):
		return "contains a NUL byte"
	case strings.Contains(s, "/"):
		return "contains \"/\""
	case s == "." || s == ".." || strings.Contains(s, ".."):
		return "contains \"..\""
	case s[0] == '.' || s[0] == '-':
		return "starts with \".\" or \"-\""
	case !safeName.MatchString(s):
		return "may contain only letters, digits, \".\", \"_\" and \"-\""
	}
	return ""
}

func checkID(c *Container, _ Paths, ds *Diagnostics) {
	if why := checkName(c.ID); why != "" {
		ds.Errorf(c.Source, "container ID %q %s", c.ID, why)
	}
	if c.Name != c.ID {
		if why := checkName(c.Name); why != "" {
			ds.Errorf(c.PosOf("name"), "name %q %s", c.Name, why)
		}
	}
}

func checkUUID(c *Container, _ Paths, ds *Diagnostics) {
	if c.UUID != "" && !isUUID(c.UUID) {
		ds.Errorf(c.PosOf("uuid"), "uuid %q is not a UUID (8-4-4-4-12 hex digits)", c.UUID)
	}
}

func checkState(c *Container, _ Paths, ds *Diagnostics) {
	switch c.State {
	case StateRunning, StateStopped, StateDestroyed:
	default:
		ds.Errorf(c.PosOf("state"), "state %q is not one of running, stopped, destroyed", c.State)
	}
}

func checkSizes(c *Container, _ Paths, ds *Diagnostics) {
	if c.Memory.RAM > MaxRAM {
		ds.Errorf(c.PosOf("memory.ram"), "memory.ram %s is more than %s", formatSize(c.Memory.RAM), formatSize(MaxRAM))
	} else if c.Memory.RAM != 0 && c.Memory.RAM < 16*MiB {
		ds.Errorf(c.PosOf("memory.ram"), "memory.ram %s is too small to run anything (at least 16M)", formatSize(c.Memory.RAM))
	}
	if c.Memory.Swap > MaxRAM {
		ds.Errorf(c.PosOf("memory.swap"), "memory.swap %s is more than %s", formatSize(c.Memory.Swap), formatSize(MaxRAM))
	}
	if c.Disk.Size != 0 && c.Disk.Size < MinDiskSize {
		ds.Errorf(c.PosOf("disk.size"), "disk.size %s is less than the %s floor", formatSize(c.Disk.Size), formatSize(MinDiskSize))
	}
	if c.Disk.Size > MaxDiskSize {
		ds.Errorf(c.PosOf("disk.size"), "disk.size %s is more than %s", formatSize(c.Disk.Size), formatSize(MaxDiskSize))
	}
	if c.Disk.Inodes != 0 && (c.Disk.Inodes < 1024 || c.Disk.Inodes > 1<<32-1) {
		ds.Errorf(c.PosOf("disk.inodes"), "disk.inodes %d is out of range (1024 to 4294967295)", c.Disk.Inodes)
	}
	if c.Processes > MaxProcesses {
		ds.Errorf(c.PosOf("processes"), "processes %d is more than the kernel allows (%d)", c.Processes, MaxProcesses)
	}
}

var cpuMask = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

func checkCPU(c *Container, _ Paths, ds *Diagnostics) {
	if c.CPU.Count < 0 || c.CPU.Count > MaxCPUs {
		ds.Errorf(c.PosOf("cpu.count"), "cpu.count %d is out of range (1 to %d)", c.CPU.Count, MaxCPUs)
	}
	if c.CPU.Limit < 0 || c.CPU.Limit > MaxCPUs*100 {
		ds.Errorf(c.PosOf("cpu.limit"), "cpu.limit %g%% is out of range", c.CPU.Limit)
	} else if c.CPU.Count > 0 && c.CPU.Limit > float64(c.CPU.Count)*100 {
		ds.Errorf(c.PosOf("cpu.limit"), "cpu.limit %g%% is more than %d CPUs can give (%d%%)", c.CPU.Limit, c.CPU.Count, c.CPU.Count*100)
	}
	if c.CPU.Units < MinCPUUnits || c.CPU.Units > MaxCPUUnits {
		ds.Errorf(c.PosOf("cpu.units"), "cpu.units %d is out of range (%d to %d)", c.CPU.Units, MinCPUUnits, MaxCPUUnits)
	}
	if c.CPU.Mask != "" {
		if !cpuMask.MatchString(c.CPU.Mask) {
			ds.Errorf(c.PosOf("cpu.mask"), "cpu.mask %q is not a CPU list such as \"0-1,3\"", c.CPU.Mask)
		} else {
			for _, r := range strings.Split(c.CPU.Mask, ",") {
				lo, hi, ok := strings.Cut(r, "-")
				a, _ := strconv.Atoi(lo)
				b := a
				if ok {
					b, _ = strconv.Atoi(hi)
				}
				if b < a || b >= MaxCPUs {
					ds.Errorf(c.PosOf("cpu.mask"), "cpu.mask range %q is out of order or beyond CPU %d", r, MaxCPUs-1)
					break
				}
			}
		}
	}
}

// validHostname follows RFC 1123: dot-separated labels of letters, digits
// and inner hyphens, each at most 63 characters, 253 in all.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			ch := l[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}

func checkHostname(c *Container, _ Paths, ds *Diagnostics) {
	if c.Hostname != "" && !validHostname(c.Hostname) {
		ds.Errorf(c.PosOf("hostname"), "hostname %q is not a valid host name (RFC 1123)", c.Hostname)
	}
	for _, d := range c.Network.SearchDomains {
		if !validHostname(d) {
			ds.Errorf(c.PosOf("network.search_domains"), "search domain %q is not a valid domain name", d)
		}
	}
}

// validIfname follows the kernel's dev_valid_name (net/core/dev.c).
func validIfname(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		// The kernel takes any byte but these; vzd keeps to printable
		// ASCII so names survive every tool and file format.
		if c := s[i]; c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func checkNetwork(c *Container, _ Paths, ds *Diagnostics) {
	n := &c.Network
	if len(n.Interfaces) > MaxInterfaces {
		ds.Errorf(c.PosOf("network"), "%d interfaces; at most %d are allowed", len(n.Interfaces), MaxInterfaces)
	}
	for _, a := range n.Nameservers {
		if !a.IsValid() || a.IsUnspecified() {
			ds.Errorf(c.PosOf("network.nameservers"), "nameserver %s is not a usable address", a)
		}
	}
	seen := map[string]bool{}
	hostNames := map[string]bool{}
	for _, ifc := range n.Interfaces {
		f := "network.interface." + ifc.Name
		if !validIfname(ifc.Name) {
			ds.Errorf(c.PosOf(f), "interface name %q is not a valid Linux interface name (1 to 15 characters, no \"/\", \":\" or spaces)", ifc.Name)
		}
		if ifc.HostName != "" {
			if !validIfname(ifc.HostName) {
				ds.Errorf(c.PosOf(f+".host_name"), "host_name %q is not a valid Linux interface name", ifc.HostName)
			}
			if hostNames[ifc.HostName] {
				ds.Errorf(c.PosOf(f+".host_name"), "host_name %q is used twice", ifc.HostName)
			}
			hostNames[ifc.HostName] = true
		}
		if ifc.Bridge != "" && !validIfname(ifc.Bridge) {
			ds.Errorf(c.PosOf(f+".bridge"), "bridge %q is not a valid Linux interface name", ifc.Bridge)
		}
		if ifc.MAC != "" {
			hw, err := net.ParseMAC(ifc.MAC)
			switch {
			case err != nil || len(hw) != 6:
				ds.Errorf(c.PosOf(f+".mac"), "mac %q is not a MAC address such as \"02:00:00:00:00:01\"", ifc.MAC)
			case hw[0]&1 != 0:
				ds.Errorf(c.PosOf(f+".mac"), "mac %q is a multicast address; an interface needs a unicast one", ifc.MAC)
			case hw.String() == "00:00:00:00:00:00":
				ds.Errorf(c.PosOf(f+".mac"), "mac %q is all zeros", ifc.MAC)
			}
		}
		if ifc.MTU != 0 && (ifc.MTU < 68 || ifc.MTU > 65535) {
			ds.Errorf(c.PosOf(f+".mtu"), "mtu %d is out of range (68 to 65535)", ifc.MTU)
		}
		for _, ip := range ifc.IPs {
			a := ip.Addr()
			switch {
			case !ip.IsValid():
				ds.Errorf(c.PosOf(f+".ip"), "address %s is not valid", ip)
			case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
				ds.Errorf(c.PosOf(f+".ip"), "address %s cannot be assigned to an interface", ip)
			case seen[a.String()]:
				ds.Errorf(c.PosOf(f+".ip"), "address %s is listed twice", a)
			}
			seen[a.String()] = true
		}
		if ifc.Gateway.IsValid() && !ifc.Gateway.Is4() {
			ds.Errorf(c.PosOf(f+".gateway"), "gateway %s is not an IPv4 address (use gateway6)", ifc.Gateway)
		}
		if ifc.Gateway6.IsValid() && !ifc.Gateway6.Is6() {
			ds.Errorf(c.PosOf(f+".gateway6"), "gateway6 %s is not an IPv6 address", ifc.Gateway6)
		}
	}
}

// sysctlAllowed lists the sysctl families the kernel scopes to a network,
// IPC or UTS namespace; anything else would change the host.
func sysctlAllowed(k string) bool {
	switch {
	case strings.HasPrefix(k, "net."), strings.HasPrefix(k, "kernel.shm"), strings.HasPrefix(k, "kernel.msg"),
		k == "kernel.sem", strings.HasPrefix(k, "fs.mqueue."), k == "kernel.hostname", k == "kernel.domainname":
		return true
	}
	return false
}

var sysctlKey = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)

func checkSysctl(c *Container, _ Paths, ds *Diagnostics) {
	keys := make([]string, 0, len(c.Sysctl))
	for k := range c.Sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		pos := c.PosOf("sysctl")
		switch {
		case !sysctlKey.MatchString(k) || strings.Contains(k, ".."):
			ds.Errorf(pos, "sysctl key %q is not a sysctl name", k)
		case !sysctlAllowed(k):
			ds.Errorf(pos, "sysctl %s is not namespaced: setting it would change the host (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, kernel.hostname, kernel.domainname)", k)
		case strings.ContainsAny(c.Sysctl[k], "\n\x00"):
			ds.Errorf(pos, "sysctl %s: value contains a newline or NUL", k)
		}
	}
}

var templateName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

func checkTemplates(c *Container, _ Paths, ds *Diagnostics) {
	if c.OSTemplate != "" && (!templateName.MatchString(c.OSTemplate) || strings.Contains(c.OSTemplate, "..") || len(c.OSTemplate) > 128) {
		ds.Errorf(c.PosOf("ostemplate"), "ostemplate %q is not a template name (letters, digits, \".\", \"_\", \"+\", \"-\")", c.OSTemplate)
	}
	seen := map[string]bool{}
	for _, t := range c.Templates {
		if !templateName.MatchString(t) || strings.Contains(t, "..") || len(t) > 128 {
			ds.Errorf(c.PosOf("templates"), "template %q is not a template name", t)
		}
		if seen[t] {
			ds.Errorf(c.PosOf("templates"), "template %q is listed twice", t)
		}
		seen[t] = true
	}
}

// inside reports whether path is strictly below base.
func inside(path, base string) bool {
	rel, err := filepath.Rel(base, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

func checkPaths(c *Container, p Paths, ds *Diagnostics) {
	if !filepath.IsAbs(c.Root) || !inside(c.Root, p.RootBase()) {
		ds.Errorf(c.PosOf("root"), "root %s is not inside %s", c.Root, p.RootBase())
	}
	if !filepath.IsAbs(c.Private) || !inside(c.Private, p.PrivateBase()) {
		ds.Errorf(c.PosOf("private"), "private %s is not inside %s", c.Private, p.PrivateBase())
	}
}

func checkDevices(c *Container, _ Paths, ds *Diagnostics) {
	for i, d := range c.Devices {
		pos := c.PosOf(fmt.Sprintf("devices.%d", i))
		if _, ok := c.Positions[fmt.Sprintf("devices.%d", i)]; !ok {
			pos = c.PosOf("devices")
		}
		if !strings.HasPrefix(d.Path, "/dev/") || strings.Contains(d.Path, "..") || filepath.Clean(d.Path) != d.Path {
			ds.Errorf(pos, "device path %q is not a clean path under /dev", d.Path)
		}
		if d.Access == "" || strings.Trim(d.Access, "rwm") != "" {
			ds.Errorf(pos, "device %s: access %q must be made of r, w and m", d.Path, d.Access)
		}
	}
}

// checkDedup validates the global dedup settings; posOf maps a dedup field
// ("schedule", "min_size", …) to where it was written.
func checkDedup(d *DedupConfig, posOf func(field string) Pos) Diagnostics {
	var ds Diagnostics
	if _, err := cron.ParseStandard(d.Schedule); err != nil {
		ds.Errorf(posOf("schedule"), "dedup schedule %q: %v", d.Schedule, err)
	}
	if d.MaxSize != 0 && d.MinSize > d.MaxSize {
		ds.Errorf(posOf("min_size"), "dedup min_size %s is larger than max_size %s", formatSize(d.MinSize), formatSize(d.MaxSize))
	}
	if d.CacheSize != 0 && d.CacheSize < MinDiskSize {
		ds.Errorf(posOf("cache_size"), "dedup cache_size %s is less than the %s floor", formatSize(d.CacheSize), formatSize(MinDiskSize))
	}
	if d.MinContainers < 1 {
		ds.Errorf(posOf("min_containers"), "dedup min_containers must be at least 1")
	}
	for _, dir := range d.Dirs {
		if dir == "" || filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == ".." || strings.HasPrefix(dir, "../") {
			ds.Errorf(posOf("dirs"), "dedup dir %q must be a clean path relative to the container's root", dir)
		}
	}
	return ds
}

func checkInit(c *Container, _ Paths, ds *Diagnostics) {
	if len(c.Init) > 0 && !strings.HasPrefix(c.Init[0], "/") {
		ds.Errorf(c.PosOf("init"), "init %q must be an absolute path inside the container", c.Init[0])
	}
}
