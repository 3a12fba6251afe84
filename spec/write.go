package spec

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteHCL writes containers as an HCL file that decodes back to the same
// specs (the same Hash) under the same Paths and an empty or equal global
// configuration. Fields at their defaults are left out.
func WriteHCL(cs []*Container, p Paths) []byte {
	w := &hclWriter{}
	for i, c := range cs {
		if i > 0 {
			w.buf.WriteString("\n")
		}
		b := w.block("container", c.ID)
		writeContainer(b, c, p)
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

func writeContainer(b *hclWriter, c *Container, p Paths) {
	setStr(b, "uuid", c.UUID)
	if c.Name != c.ID {
		setStr(b, "name", c.Name)
	}
	setStr(b, "description", c.Description)
	b.set("state", quoteHCL(string(c.State)))
	b.set("onboot", strconv.FormatBool(c.OnBoot))
	setStr(b, "hostname", c.Hostname)
	if c.Privileged {
		b.set("privileged", "true")
	}
	if c.RestartToApply {
		b.set("restart_to_apply", "true")
	}
	setStr(b, "ostemplate", c.OSTemplate)
	if len(c.Templates) > 0 {
		b.set("templates", strList(c.Templates))
	}
	setNum(b, "processes", c.Processes)
	if c.StopTimeout != DefaultStopTimeout && c.StopTimeout > 0 {
		b.set("stop_timeout", quoteHCL(c.StopTimeout.Round(time.Millisecond).String()))
		if c.StopTimeout%time.Millisecond != 0 {
			b.set("stop_timeout", quoteHCL(c.StopTimeout.String()))
		}
	}
	if !slices.Equal(c.Init, []string{DefaultInit}) && len(c.Init) > 0 {
		b.set("init", strList(c.Init))
	}
	if c.Root != p.Host(expandVEID(DefaultRootTmpl, c.ID)) {
		b.set("root", quoteHCL(p.Logical(c.Root)))
	}
	if c.Private != p.Host(expandVEID(DefaultPrivateTmpl, c.ID)) {
		b.set("private", quoteHCL(p.Logical(c.Private)))
	}
	setNum(b, "uid_base", uint64(c.UIDBase))
	setNum(b, "gid_base", uint64(c.GIDBase))
	if c.NoDedup {
		b.set("dedup", "false")
	}
	if len(c.Sysctl) > 0 {
		b.line("sysctl = {")
		for _, k := range slices.Sorted(maps.Keys(c.Sysctl)) {
			b.line("  " + quoteHCL(k) + " = " + quoteHCL(c.Sysctl[k]))
		}
		b.line("}")
	}
	if c.CPU != (CPU{Units: DefaultCPUUnits}) {
		cb := b.block("cpu")
		setNum(cb, "count", uint64(c.CPU.Count))
		if c.CPU.Limit != 0 {
			cb.set("limit", quoteHCL(strconv.FormatFloat(c.CPU.Limit, 'f', -1, 64)+"%"))
		}
		cb.set("units", strconv.FormatUint(c.CPU.Units, 10))
		setStr(cb, "mask", c.CPU.Mask)
		cb.end()
	}
	if c.Memory != (Memory{}) {
		mb := b.block("memory")
		setSize(mb, "ram", c.Memory.RAM)
		setSize(mb, "swap", c.Memory.Swap)
		mb.end()
	}
	if c.Disk != (Disk{}) {
		db := b.block("disk")
		setSize(db, "size", c.Disk.Size)
		setNum(db, "inodes", c.Disk.Inodes)
		setNum(db, "iops_limit", c.Disk.IOPSLimit)
		setSize(db, "io_limit", c.Disk.IOLimit)
		db.end()
	}
	n := c.Network
	if n.NameserverInherit || len(n.Nameservers) > 0 || len(n.SearchDomains) > 0 || len(n.Interfaces) > 0 {
		nb := b.block("network")
		if n.NameserverInherit {
			nb.set("nameservers", quoteHCL("inherit"))
		} else if len(n.Nameservers) > 0 {
			var ss []string
			for _, a := range n.Nameservers {
				ss = append(ss, a.String())
			}
			nb.set("nameservers", strList(ss))
		}
		if len(n.SearchDomains) > 0 {
			nb.set("search_domains", strList(n.SearchDomains))
		}
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
	for _, d := range c.Devices {
		db := b.block("device")
		db.set("path", quoteHCL(d.Path))
		db.set("access", quoteHCL(d.Access))
		db.end()
	}
}
