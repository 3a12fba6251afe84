package spec

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// WriteHCL writes containers as an HCL file that decodes back to the same
// specs (the same Hash) when parsed under the same Paths and global
// configuration g (nil: none). Fields the decoder would fill with the same
// value anyway are left out.
func WriteHCL(cs []*Container, p Paths, g *Global) []byte {
	w := &hclWriter{}
	for i, c := range cs {
		if i > 0 {
			w.buf.WriteString("\n")
		}
		b := w.block("container", c.ID)
		writeContainer(b, c, p, g)
		b.end()
	}
	return w.buf.Bytes()
}

// hclWriter writes the small subset of HCL the container schema needs
// (hclwrite pulls in a dependency the module does not carry).
type hclWriter struct {
	buf    bytes.Buffer
	indent int
}

func (w *hclWriter) line(s string) {
	w.buf.WriteString(strings.Repeat("  ", w.indent))
	w.buf.WriteString(s)
	w.buf.WriteByte('\n')
}

func (w *hclWriter) block(typ string, labels ...string) *hclWriter {
	s := typ
	for _, l := range labels {
		s += " " + quoteHCL(l)
	}
	w.line(s + " {")
	w.indent++
	return w
}

func (w *hclWriter) end() {
	w.indent--
	w.line("}")
}

func (w *hclWriter) set(name, value string) { w.line(name + " = " + value) }

// quoteHCL quotes s as an HCL string literal, escaping template sequences.
func quoteHCL(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteString(`\uFFFD`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case (r == '$' || r == '%') && strings.HasPrefix(s[i+1:], "{"):
			b.WriteRune(r)
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func strList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quoteHCL(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func setStr(b *hclWriter, name, v string) {
	if v != "" {
		b.set(name, quoteHCL(v))
	}
}

func setNum(b *hclWriter, name string, v uint64) {
	if v != 0 {
		b.set(name, strconv.FormatUint(v, 10))
	}
}

func setSize(b *hclWriter, name string, v uint64) {
	if v != 0 {
		b.set(name, quoteHCL(formatSize(v)))
	}
}

// fieldWriter writes a field when it differs from what the decoder would
// give without it: its zero value, or the global default when the global
// configuration has one for that field.
type fieldWriter struct {
	*hclWriter
	g *Global
}

// forced reports whether a field must be written even at its zero value,
// because the global defaults would fill it otherwise.
func (w fieldWriter) forced(key string) bool { return w.g != nil && written(&w.g.Defaults, key) }

func (w fieldWriter) str(key, name, v string) {
	if v != "" || w.forced(key) {
		w.set(name, quoteHCL(v))
	}
}

func (w fieldWriter) num(key, name string, v uint64) {
	if v != 0 || w.forced(key) {
		w.set(name, strconv.FormatUint(v, 10))
	}
}

func (w fieldWriter) size(key, name string, v uint64) {
	switch {
	case v != 0:
		w.set(name, quoteHCL(formatSize(v)))
	case w.forced(key):
		w.set(name, quoteHCL("unlimited"))
	}
}

func (w fieldWriter) boolean(key, name string, v, zero bool) {
	if v != zero || w.forced(key) {
		w.set(name, strconv.FormatBool(v))
	}
}

func (w fieldWriter) list(key, name string, v []string) {
	if len(v) > 0 || w.forced(key) {
		w.set(name, strList(v))
	}
}

func writeContainer(hw *hclWriter, c *Container, p Paths, g *Global) {
	b := fieldWriter{hw, g}
	b.str("uuid", "uuid", c.UUID)
	if c.Name != c.ID {
		b.str("name", "name", c.Name)
	}
	b.str("description", "description", c.Description)
	b.set("state", quoteHCL(string(c.State)))
	b.set("onboot", strconv.FormatBool(c.OnBoot))
	b.str("hostname", "hostname", c.Hostname)
	b.boolean("privileged", "privileged", c.Privileged, false)
	b.boolean("restart_to_apply", "restart_to_apply", c.RestartToApply, false)
	b.str("ostemplate", "ostemplate", c.OSTemplate)
	b.list("templates", "templates", c.Templates)
	b.num("processes", "processes", c.Processes)
	if (c.StopTimeout != DefaultStopTimeout || b.forced("stop_timeout")) && c.StopTimeout > 0 {
		b.set("stop_timeout", quoteHCL(c.StopTimeout.String()))
	}
	if (!slices.Equal(c.Init, []string{DefaultInit}) || b.forced("init")) && len(c.Init) > 0 {
		b.set("init", strList(c.Init))
	}
	if c.Root != p.Host(expandVEID(DefaultRootTmpl, c.ID)) || b.forced("root") {
		b.set("root", quoteHCL(p.Logical(c.Root)))
	}
	if c.Private != p.Host(expandVEID(DefaultPrivateTmpl, c.ID)) || b.forced("private") {
		b.set("private", quoteHCL(p.Logical(c.Private)))
	}
	b.num("uid_base", "uid_base", uint64(c.UIDBase))
	b.num("gid_base", "gid_base", uint64(c.GIDBase))
	b.boolean("dedup", "dedup", !c.NoDedup, true)
	if len(c.Sysctl) > 0 || b.forced("sysctl") {
		b.line("sysctl = {")
		for _, k := range slices.Sorted(maps.Keys(c.Sysctl)) {
			b.line("  " + quoteHCL(k) + " = " + quoteHCL(c.Sysctl[k]))
		}
		b.line("}")
	}
	forcedAny := func(prefix string) bool {
		for _, f := range inheritable {
			if strings.HasPrefix(f.key, prefix) && b.forced(f.key) {
				return true
			}
		}
		return false
	}
	if c.CPU != (CPU{Units: DefaultCPUUnits}) || forcedAny("cpu.") {
		b.block("cpu")
		b.num("cpu.count", "count", uint64(c.CPU.Count))
		if c.CPU.Limit != 0 || b.forced("cpu.limit") {
			b.set("limit", quoteHCL(strconv.FormatFloat(c.CPU.Limit, 'f', -1, 64)+"%"))
		}
		b.set("units", strconv.FormatUint(c.CPU.Units, 10))
		b.str("cpu.mask", "mask", c.CPU.Mask)
		b.end()
	}
	if c.Memory != (Memory{}) || forcedAny("memory.") {
		b.block("memory")
		b.size("memory.ram", "ram", c.Memory.RAM)
		b.size("memory.swap", "swap", c.Memory.Swap)
		b.end()
	}
	if c.Disk != (Disk{}) || forcedAny("disk.") {
		b.block("disk")
		b.size("disk.size", "size", c.Disk.Size)
		b.num("disk.inodes", "inodes", c.Disk.Inodes)
		b.num("disk.iops_limit", "iops_limit", c.Disk.IOPSLimit)
		b.size("disk.io_limit", "io_limit", c.Disk.IOLimit)
		b.end()
	}
	n := c.Network
	if n.NameserverInherit || len(n.Nameservers) > 0 || len(n.SearchDomains) > 0 || len(n.Interfaces) > 0 || forcedAny("network.") {
		nb := b.block("network")
		if n.NameserverInherit {
			nb.set("nameservers", quoteHCL("inherit"))
		} else if len(n.Nameservers) > 0 || b.forced("network.nameservers") {
			var ss []string
			for _, a := range n.Nameservers {
				ss = append(ss, a.String())
			}
			nb.set("nameservers", strList(ss))
		}
		b.list("network.search_domains", "search_domains", n.SearchDomains)
		for _, ifc := range n.Interfaces {
			ib := nb.block("interface", ifc.Name)
			var ips []string
			for _, ip := range ifc.IPs {
				ips = append(ips, ip.String())
			}
			ib.set("ip", strList(ips))
			if ifc.Gateway.IsValid() {
				ib.set("gateway", quoteHCL(ifc.Gateway.String()))
			}
			if ifc.Gateway6.IsValid() {
				ib.set("gateway6", quoteHCL(ifc.Gateway6.String()))
			}
			setStr(ib, "bridge", ifc.Bridge)
			setStr(ib, "mac", ifc.MAC)
			setStr(ib, "host_name", ifc.HostName)
			setNum(ib, "mtu", uint64(ifc.MTU))
			ib.end()
		}
		nb.end()
	}
	if len(c.Devices) == 0 && b.forced("devices") {
		b.set("devices", "[]")
	}
	for _, d := range c.Devices {
		db := b.block("device")
		db.set("path", quoteHCL(d.Path))
		db.set("access", quoteHCL(d.Access))
		db.end()
	}
}
