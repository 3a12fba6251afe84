package spec

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Legacy value syntax (vzctl(8), ctid.conf(5)):
//   - memory (PHYSPAGES, SWAPPAGES): 4 KiB pages, or bytes with a K/M/G/T
//     suffix; "barrier:limit" pairs use the limit; "unlimited" and the
//     32- and 64-bit LONG_MAX page counts vzctl writes mean no limit.
//   - DISKSPACE: KiB, or bytes with a suffix; DISKINODES: a count; both as
//     "soft:hard", the hard limit is used.
//   - IOLIMIT: bytes/s (suffixes allowed); IOPSLIMIT: operations/s.
//   - CPULIMIT: percent of one CPU; CPUS: count; CPUUNITS: weight.
//
// Global keys of vz.conf read by vzd (besides container keys, which act as
// defaults for every container):
//   - PFCACHE=yes|no            dedup enabled (default yes)
//   - PFCACHE_SCHEDULE="@every 1h"  robfig/cron schedule of dedup scans
//   - PFCACHE_MINSIZE, PFCACHE_MAXSIZE  sizes (bytes, or suffixed) of files cached
//   - PFCACHE_MIN_CONTAINERS=2  a file must be in this many containers
//   - PFCACHE_DIRS="bin lib …"  directories scanned inside containers
//   - PFCACHE_SIZE=4G           size of the cache image
//   - DEF_OSTEMPLATE            ostemplate of containers that name none

// Keys of vz.conf that are never merged into containers: identity and
// addresses are per container, and PFCACHE in vz.conf switches the dedup
// service, while in a ve.conf it only opts that container out.
var legacyNotInherited = map[string]bool{"VEID": true, "UUID": true, "NETFILTER": true,
	"NAME": true, "DESCRIPTION": true, "HOSTNAME": true, "IP_ADDRESS": true, "NETIF": true, "DISABLED": true,
	"PFCACHE": true}

// Node-level vz.conf keys vzctl knows; vzd accepts them without warning.
var legacyNodeKeys = map[string]bool{
	"VIRTUOZZO": true, "LOCKDIR": true, "DUMPDIR": true, "VE0CPUUNITS": true, "VE_STOP_MODE": true,
	"LOGGING": true, "LOGFILE": true, "LOG_LEVEL": true, "VERBOSE": true, "DISK_QUOTA": true,
	"VZFASTBOOT": true, "ERROR_ON_ARPFAIL": true, "TEMPLATE": true, "CONFIGFILE": true,
	"DEF_OSTEMPLATE": true, "VE_LAYOUT": true, "VZWDOG": true, "IPTABLES_MODULES": true,
	"IPTABLES": true, "IP6TABLES": true, "IPV6": true, "ACTIONLOGDIR": true, "GOLDEN_IMAGE": true,
	"TRAFFIC_SHAPING": true, "BANDWIDTH": true, "TOTALRATE": true, "RATE": true, "RATEMPU": true,
	"USE_NET_RPS": true, "VEFSTYPE": true, "VEIMAGEFORMAT": true, "USE_VENET_MASK": true,
	"SKIP_SYSCTL_SETUP": true, "REMOVEMIGRATED": true, "MODULES_DISABLED": true,
	"PFCACHE": true, "PFCACHE_SCHEDULE": true, "PFCACHE_MINSIZE": true, "PFCACHE_MAXSIZE": true,
	"PFCACHE_MIN_CONTAINERS": true, "PFCACHE_DIRS": true, "PFCACHE_SIZE": true, "NETFILTER": true,
}

// Container keys vzd maps onto Container fields, with the field path used
// in Positions.
var legacyFields = map[string]string{
	"NAME": "name", "UUID": "uuid", "DESCRIPTION": "description", "DISABLED": "state",
	"ONBOOT": "onboot", "HOSTNAME": "hostname", "OSTEMPLATE": "ostemplate", "TEMPLATES": "templates",
	"CPUS": "cpu.count", "CPULIMIT": "cpu.limit", "CPUUNITS": "cpu.units", "CPUMASK": "cpu.mask",
	"PHYSPAGES": "memory.ram", "SWAPPAGES": "memory.swap", "NUMPROC": "processes",
	"DISKSPACE": "disk.size", "DISKINODES": "disk.inodes", "IOPSLIMIT": "disk.iops_limit", "IOLIMIT": "disk.io_limit",
	"NAMESERVER": "network.nameservers", "SEARCHDOMAIN": "network.search_domains",
	"IP_ADDRESS": "network.interface.venet0.ip", "NETIF": "network",
	"VE_ROOT": "root", "VE_PRIVATE": "private", "LOCAL_UID": "uid_base", "LOCAL_GID": "gid_base",
	"DEVNODES": "devices", "STOP_TIMEOUT": "stop_timeout", "PFCACHE": "dedup",
}

// Legacy keys vzd reads but does not apply: UBC parameters superseded by
// PHYSPAGES/SWAPPAGES on vswap kernels, quota and platform knobs. They are
// kept in Container.Unknown and warned about like any unknown key.

// LegacyVenet is the name of the routed interface IP_ADDRESS creates.
const LegacyVenet = "venet0"

// ParseGlobalLegacy parses a vz.conf.
func ParseGlobalLegacy(file string, data []byte) (*Global, Diagnostics) {
	kvs, diags := parseLegacyKeys(file, data)
	g := DefaultGlobal()
	g.Source = Pos{File: file}
	for k, kv := range kvs {
		g.Raw[k] = kv.Value
		g.RawPos[k] = kv.Pos
		if !legacyNodeKeys[k] && legacyFields[k] == "" {
			diags.Warnf(kv.Pos, "unknown key %s ignored", k)
		}
	}
	d := &g.Dedup
	if kv, ok := kvs["PFCACHE"]; ok {
		b, err := parseYesNo(kv.Value)
		if err != nil {
			diags.Errorf(kv.Pos, "PFCACHE: %v", err)
		}
		d.Enabled = b
	}
	if kv, ok := kvs["PFCACHE_SCHEDULE"]; ok {
		d.Schedule = kv.Value
	}
	for key, dst := range map[string]*uint64{"PFCACHE_MINSIZE": &d.MinSize, "PFCACHE_MAXSIZE": &d.MaxSize, "PFCACHE_SIZE": &d.CacheSize} {
		if kv, ok := kvs[key]; ok {
			n, err := parseSize(kv.Value, 1)
			if err != nil {
				diags.Errorf(kv.Pos, "%s: %v", key, err)
			}
			*dst = n
		}
	}
	if kv, ok := kvs["PFCACHE_MIN_CONTAINERS"]; ok {
		n, err := strconv.Atoi(kv.Value)
		if err != nil || n < 1 {
			diags.Errorf(kv.Pos, "PFCACHE_MIN_CONTAINERS: expected a count of at least 1, got %q", kv.Value)
		} else {
			d.MinContainers = n
		}
	}
	if kv, ok := kvs["PFCACHE_DIRS"]; ok {
		d.Dirs = strings.Fields(kv.Value)
	}
	legacyDedupKeys := map[string]string{"schedule": "PFCACHE_SCHEDULE", "min_size": "PFCACHE_MINSIZE",
		"max_size": "PFCACHE_MAXSIZE", "cache_size": "PFCACHE_SIZE", "min_containers": "PFCACHE_MIN_CONTAINERS", "dirs": "PFCACHE_DIRS"}
	diags = append(diags, checkDedup(d, func(f string) Pos {
		if p, ok := g.RawPos[legacyDedupKeys[f]]; ok {
			return p
		}
		return g.Source
	})...)
	// Container keys of vz.conf are defaults for HCL containers too.
	def, ddiags := mapLegacy(&Container{Positions: map[string]Pos{}}, g.inherited(), "", true)
	diags = append(diags, ddiags...)
	g.Defaults = *def
	return g, sortDiags(diags)
}

// DefaultGlobal is the configuration of a node with no global file.
func DefaultGlobal() *Global {
	return &Global{
		Raw:    map[string]string{},
		RawPos: map[string]Pos{},
		Dedup: DedupConfig{Enabled: true, Schedule: "@every 1h", MinSize: 4 << 10, MaxSize: 256 << 20,
			MinContainers: 2, Dirs: []string{"bin", "lib", "lib64", "sbin", "usr", "opt", "etc"}, CacheSize: 4 << 30},
	}
}

// inherited returns the vz.conf assignments merged under container files.
func (g *Global) inherited() map[string]legacyKV {
	m := map[string]legacyKV{}
	if g == nil {
		return m
	}
	for k, v := range g.Raw {
		if legacyNotInherited[k] || legacyFields[k] == "" {
			continue
		}
		m[k] = legacyKV{Key: k, Value: v, Pos: g.RawPos[k]}
	}
	if v, ok := g.Raw["DEF_OSTEMPLATE"]; ok {
		if _, set := m["OSTEMPLATE"]; !set {
			m["OSTEMPLATE"] = legacyKV{Key: "OSTEMPLATE", Value: v, Pos: g.RawPos["DEF_OSTEMPLATE"]}
		}
	}
	return m
}

// ParseLegacy decodes one legacy container file. id is the container's ID
// (the file's base name without .conf); g may be nil.
func ParseLegacy(file, id string, data []byte, g *Global, p Paths) (*Container, Diagnostics) {
	kvs, diags := parseLegacyKeys(file, data)
	merged := g.inherited()
	for k, kv := range kvs {
		merged[k] = kv
	}
	c := &Container{ID: id, Format: FormatLegacy, Source: Pos{File: file, Line: 1}, Positions: map[string]Pos{}}
	c, mdiags := mapLegacy(c, merged, file, false)
	diags = append(diags, mdiags...)
	// With a legacy vz.conf this adds nothing (its keys were merged
	// above); with an HCL global file it applies its defaults block.
	applyDefaults(c, g, p)
	return c, sortDiags(diags)
}

// mapLegacy sets the fields of c from legacy assignments. Unknown keys of
// file are kept in c.Unknown and warned about.
func mapLegacy(c *Container, kvs map[string]legacyKV, file string, defaults bool) (*Container, Diagnostics) {
	var diags Diagnostics
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kv := kvs[k]
		field, known := legacyFields[k]
		if !known {
			if kv.Pos.File == file {
				if c.Unknown == nil {
					c.Unknown = map[string]string{}
				}
				c.Unknown[k] = kv.Value
				diags.Warnf(kv.Pos, "key %s is not used by vzd (kept, ignored)", k)
			}
			continue
		}
		if strings.TrimSpace(kv.Value) == "" && legacyNumeric[k] {
			continue // vzctl writes KEY="" for "not set"
		}
		if field != "network" {
			c.Positions[field] = kv.Pos
		}
		var kdiags Diagnostics
		err := setLegacy(c, k, kv, &kdiags)
		if kv.Pos.File != file && !defaults {
			continue // a vz.conf value: reported once, when vz.conf is parsed
		}
		diags = append(diags, kdiags...)
		if err != nil {
			diags.Errorf(kv.Pos, "%s=%q: %v", k, kv.Value, err)
		}
	}
	return c, diags
}

// legacyNumeric are the keys whose empty value means "not set".
var legacyNumeric = map[string]bool{"CPUS": true, "CPULIMIT": true, "CPUUNITS": true, "PHYSPAGES": true,
	"SWAPPAGES": true, "NUMPROC": true, "DISKSPACE": true, "DISKINODES": true, "IOLIMIT": true,
	"IOPSLIMIT": true, "LOCAL_UID": true, "LOCAL_GID": true, "STOP_TIMEOUT": true, "ONBOOT": true,
	"DISABLED": true, "PFCACHE": true}

// legacyLimit returns the limit of a "barrier:limit" pair, or the value.
func legacyLimit(v string) string {
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		return v[i+1:]
	}
	return v
}

// legacyMem parses a memory value: pages or suffixed bytes. Zero with
// unlimited=true means no limit.
func legacyMem(v string, plain uint64) (n uint64, unlimited bool, err error) {
	v = strings.TrimSpace(legacyLimit(v))
	if v == "2147483647" || v == "9223372036854775807" {
		return 0, true, nil // LONG_MAX: vzctl's "unlimited"
	}
	n, err = parseSize(v, plain)
	if errors.Is(err, errUnlimited) {
		return 0, true, nil
	}
	return n, false, err
}

func parseYesNo(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "1", "on":
		return true, nil
	case "no", "false", "0", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("expected yes or no")
}

func stripDot(s string) string { return strings.TrimPrefix(strings.TrimSpace(s), ".") }

func setLegacy(c *Container, key string, kv legacyKV, diags *Diagnostics) error {
	v := kv.Value
	switch key {
	case "NAME":
		c.Name = v
	case "UUID":
		c.UUID = strings.Trim(v, "{}")
	case "DESCRIPTION":
		c.Description = v
	case "DISABLED":
		b, err := parseYesNo(v)
		if err != nil {
			return err
		}
		if b {
			c.State = StateStopped
		}
	case "ONBOOT":
		switch strings.ToLower(v) {
		case "yes", "auto":
			c.OnBoot = true
		case "no", "":
			c.OnBoot = false
		default:
			return errors.New("expected yes, no or auto")
		}
	case "HOSTNAME":
		c.Hostname = v
	case "OSTEMPLATE":
		c.OSTemplate = stripDot(v)
	case "TEMPLATES":
		c.Templates = nil
		for _, t := range strings.Fields(v) {
			c.Templates = append(c.Templates, stripDot(t))
		}
	case "CPUS":
		if v == "" || v == "0" || strings.EqualFold(v, "unlimited") {
			c.CPU.Count = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errors.New("expected a number of CPUs")
		}
		c.CPU.Count = n
	case "CPULIMIT":
		if v == "" || v == "0" {
			c.CPU.Limit = 0
			return nil
		}
		f, err := parsePercent(v)
		if err != nil {
			return err
		}
		c.CPU.Limit = f
	case "CPUUNITS":
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errors.New("expected a whole number")
		}
		c.CPU.Units = n
	case "CPUMASK":
		if strings.EqualFold(v, "all") {
			v = ""
		}
		c.CPU.Mask = v
	case "PHYSPAGES", "SWAPPAGES":
		n, unl, err := legacyMem(v, 4096)
		if err != nil {
			return err
		}
		if key == "PHYSPAGES" {
			if n == 0 && !unl {
				return errors.New("a RAM limit of 0 would stop the container from running; use unlimited")
			}
			c.Memory.RAM = n
		} else {
			c.Memory.Swap = n
		}
	case "NUMPROC":
		n, _, err := legacyMem(v, 1)
		if err != nil {
			return err
		}
		c.Processes = n
	case "DISKSPACE":
		n, _, err := legacyMem(v, 1024)
		if err != nil {
			return err
		}
		c.Disk.Size = n
	case "DISKINODES":
		n, _, err := legacyMem(v, 1)
		if err != nil {
			return err
		}
		c.Disk.Inodes = n
	case "IOLIMIT":
		n, _, err := legacyMem(v, 1)
		if err != nil {
			return err
		}
		c.Disk.IOLimit = n
	case "IOPSLIMIT":
		n, _, err := legacyMem(v, 1)
		if err != nil {
			return err
		}
		c.Disk.IOPSLimit = n
	case "NAMESERVER":
		return setNameservers(&c.Network, strings.Fields(v))
	case "SEARCHDOMAIN":
		c.Network.SearchDomains = strings.Fields(v)
	case "IP_ADDRESS":
		return setVenet(c, v)
	case "NETIF":
		return setNetif(c, kv, diags)
	case "VE_ROOT":
		c.Root = v
	case "VE_PRIVATE":
		c.Private = v
	case "LOCAL_UID", "LOCAL_GID":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return errors.New("expected a uid")
		}
		if key == "LOCAL_UID" {
			c.UIDBase = uint32(n)
		} else {
			c.GIDBase = uint32(n)
		}
	case "DEVNODES":
		c.Devices = nil
		for _, d := range strings.Fields(v) {
			path, access, ok := strings.Cut(d, ":")
			if !ok {
				return fmt.Errorf("device %q: expected name:access", d)
			}
			if access == "none" {
				continue
			}
			c.Devices = append(c.Devices, Device{Path: "/dev/" + strings.TrimPrefix(path, "/dev/"), Access: access})
		}
	case "STOP_TIMEOUT":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return errors.New("expected seconds")
		}
		c.StopTimeout = time.Duration(n) * time.Second
	case "PFCACHE":
		b, err := parseYesNo(v)
		if err != nil {
			return err
		}
		c.NoDedup = !b
	}
	return nil
}

func setNameservers(n *Network, fields []string) error {
	n.Nameservers, n.NameserverInherit = nil, false
	for _, f := range fields {
		if f == "inherit" {
			n.NameserverInherit = true
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return fmt.Errorf("nameserver %q is not an IP address", f)
		}
		n.Nameservers = append(n.Nameservers, a)
	}
	if n.NameserverInherit && len(n.Nameservers) > 0 {
		return errors.New("inherit cannot be combined with addresses")
	}
	return nil
}

// parseAddrList parses addresses with an optional /prefix or /netmask; an
// address without one is a host route (/32 or /128).
func parseAddrList(fields []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range fields {
		if f == "0.0.0.0" || f == "::" {
			continue // "no address" in vzctl samples
		}
		addr, mask, hasMask := strings.Cut(f, "/")
		a, err := netip.ParseAddr(addr)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", f)
		}
		bits := a.BitLen()
		if hasMask {
			if m, err := netip.ParseAddr(mask); err == nil && a.Is4() && m.Is4() {
				bits, err = maskBits(m)
				if err != nil {
					return nil, fmt.Errorf("%q: %v", f, err)
				}
			} else if n, err := strconv.Atoi(mask); err == nil && n >= 0 && n <= a.BitLen() {
				bits = n
			} else {
				return nil, fmt.Errorf("%q: bad prefix length", f)
			}
		}
		out = append(out, netip.PrefixFrom(a, bits))
	}
	return out, nil
}

func maskBits(m netip.Addr) (int, error) {
	b := m.As4()
	u := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for u&(1<<31) != 0 {
		ones++
		u <<= 1
	}
	if u != 0 {
		return 0, errors.New("netmask is not contiguous")
	}
	return ones, nil
}

func setVenet(c *Container, v string) error {
	ips, err := parseAddrList(strings.Fields(v))
	if err != nil {
		return err
	}
	if len(ips) == 0 {
		return nil
	}
	if ifc := c.Interface(LegacyVenet); ifc != nil {
		ifc.IPs = ips
		return nil
	}
	c.Network.Interfaces = append(c.Network.Interfaces, Interface{Name: LegacyVenet, IPs: ips})
	return nil
}

// netifIgnored are NETIF fields vzctl or Virtuozzo write that vzd does not
// apply; they are accepted with a warning.
var netifIgnored = map[string]bool{"host_mac": true, "mac_filter": true, "configure": true,
	"dhcp": true, "dhcp6": true, "network": true, "type": true}

// setNetif parses NETIF="ifname=eth0,mac=…,host_ifname=…,bridge=br0;ifname=eth1,…".
func setNetif(c *Container, kv legacyKV, diags *Diagnostics) error {
	for _, entry := range strings.Split(kv.Value, ";") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		var ifc Interface
		for _, f := range strings.Split(entry, ",") {
			if strings.TrimSpace(f) == "" {
				continue
			}
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return fmt.Errorf("field %q: expected key=value", f)
			}
			k = strings.TrimSpace(k)
			switch k {
			case "ifname":
				ifc.Name = v
			case "mac":
				ifc.MAC = normalizeMAC(v)
			case "host_ifname":
				ifc.HostName = v
			case "bridge":
				ifc.Bridge = v
			case "ip":
				ips, err := parseAddrList(strings.Fields(v))
				if err != nil {
					return err
				}
				ifc.IPs = append(ifc.IPs, ips...)
			case "gw":
				a, err := netip.ParseAddr(v)
				if err != nil {
					return fmt.Errorf("gw %q is not an IP address", v)
				}
				ifc.Gateway = a
			case "gw6":
				a, err := netip.ParseAddr(v)
				if err != nil {
					return fmt.Errorf("gw6 %q is not an IP address", v)
				}
				ifc.Gateway6 = a
			case "mtu":
				n, err := strconv.Atoi(v)
				if err != nil {
					return fmt.Errorf("mtu %q is not a number", v)
				}
				ifc.MTU = n
			default:
				if netifIgnored[k] {
					diags.Warnf(kv.Pos, "NETIF field %s is not applied by vzd", k)
				} else {
					diags.Warnf(kv.Pos, "unknown NETIF field %s ignored", k)
				}
			}
		}
		if ifc.Name == "" {
			return fmt.Errorf("interface without ifname")
		}
		if c.Interface(ifc.Name) != nil {
			return fmt.Errorf("interface %s listed twice", ifc.Name)
		}
		c.Network.Interfaces = append(c.Network.Interfaces, ifc)
		c.Positions["network.interface."+ifc.Name] = kv.Pos
		for _, sub := range []string{"ip", "mac", "bridge", "host_name", "gateway", "gateway6", "mtu"} {
			c.Positions["network.interface."+ifc.Name+"."+sub] = kv.Pos
		}
	}
	return nil
}

// normalizeMAC lower-cases a MAC and accepts vzctl's 12 hex digit form.
func normalizeMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 12 && !strings.Contains(s, ":") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		return b.String()
	}
	return s
}

// expandVEID expands $VEID and ${VEID}, as vzctl does in VE_ROOT and
// VE_PRIVATE (and nowhere else).
func expandVEID(s, id string) string {
	s = strings.ReplaceAll(s, "${VEID}", id)
	return strings.ReplaceAll(s, "$VEID", id)
}

// legacyID returns the container ID a legacy file name stands for, or "".
func legacyID(name string) string {
	base := filepath.Base(name)
	id, ok := strings.CutSuffix(base, ".conf")
	if !ok {
		return ""
	}
	if isUUID(id) || isCTID(id) {
		return id
	}
	return ""
}

// isCTID reports whether s is a numeric OpenVZ container ID (0 is the host).
func isCTID(s string) bool {
	if s == "" || len(s) > 10 || s[0] == '0' {
		return false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n > 0 && n <= math.MaxInt32
}

// isUUID reports whether s is a UUID in its canonical 8-4-4-4-12 form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
