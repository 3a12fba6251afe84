package spec

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
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
	return alignEquals(w.buf.Bytes())
}

// alignEquals aligns the "=" of consecutive attribute lines at the same
// indentation, as `hcl fmt` does.
func alignEquals(src []byte) []byte {
	lines := strings.Split(string(src), "\n")
	attr := func(l string) (indent, name string, ok bool) {
		t := strings.TrimLeft(l, " ")
		name, _, ok = strings.Cut(t, " = ")
		if !ok || name == "" || strings.ContainsAny(name, " \"{}") {
			return "", "", false
		}
		return l[:len(l)-len(t)], name, true
	}
	for i := 0; i < len(lines); {
		ind, _, ok := attr(lines[i])
		if !ok {
			i++
			continue
		}
		j, width := i, 0
		for ; j < len(lines); j++ {
			ind2, name, ok := attr(lines[j])
			if !ok || ind2 != ind {
				break
			}
			width = max(width, len(name))
		}
		for k := i; k < j; k++ {
			ind2, name, _ := attr(lines[k])
			rest := lines[k][len(ind2)+len(name):]
			lines[k] = ind2 + name + strings.Repeat(" ", width-len(name)) + rest
		}
		i = j
	}
	return []byte(strings.Join(lines, "\n"))
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

// writeContainer writes the fields of c whose value differs from the
// built-in default or from the default of g: the output means the same
// with or without the global configuration.
func writeContainer(b *hclWriter, c *Container, p Paths, g *Global) {
	d0 := &Container{ID: c.ID, Positions: map[string]Pos{}}
	applyDefaults(d0, nil, p)
	dg := &Container{ID: c.ID, Positions: map[string]Pos{}}
	applyDefaults(dg, g, p)
	want := func(get func(x *Container) any) bool {
		v := get(c)
		return !reflect.DeepEqual(v, get(d0)) || !reflect.DeepEqual(v, get(dg))
	}
	str := func(name string, get func(x *Container) string) {
		if want(func(x *Container) any { return get(x) }) {
			b.set(name, quoteHCL(get(c)))
		}
	}
	num := func(name string, get func(x *Container) uint64) {
		if want(func(x *Container) any { return get(x) }) {
			b.set(name, strconv.FormatUint(get(c), 10))
		}
	}
	size := func(name string, get func(x *Container) uint64) {
		if want(func(x *Container) any { return get(x) }) {
			if v := get(c); v == 0 {
				b.set(name, quoteHCL("unlimited"))
			} else {
				b.set(name, quoteHCL(formatSize(v)))
			}
		}
	}
	boolean := func(name string, get func(x *Container) bool) {
		if want(func(x *Container) any { return get(x) }) {
			b.set(name, strconv.FormatBool(get(c)))
		}
	}
	list := func(name string, get func(x *Container) []string) {
		if want(func(x *Container) any { return get(x) }) {
			b.set(name, strList(get(c)))
		}
	}
	str("uuid", func(x *Container) string { return x.UUID })
	str("name", func(x *Container) string { return x.Name })
	str("description", func(x *Container) string { return x.Description })
	b.set("state", quoteHCL(string(c.State)))
	b.set("onboot", strconv.FormatBool(c.OnBoot))
	str("hostname", func(x *Container) string { return x.Hostname })
	boolean("privileged", func(x *Container) bool { return x.Privileged })
	boolean("restart_to_apply", func(x *Container) bool { return x.RestartToApply })
	str("ostemplate", func(x *Container) string { return x.OSTemplate })
	list("templates", func(x *Container) []string { return x.Templates })
	num("processes", func(x *Container) uint64 { return x.Processes })
	if want(func(x *Container) any { return x.StopTimeout }) {
		b.set("stop_timeout", quoteHCL(c.StopTimeout.String()))
	}
	list("init", func(x *Container) []string { return x.Init })
	if want(func(x *Container) any { return x.Root }) {
		b.set("root", quoteHCL(p.Logical(c.Root)))
	}
	if want(func(x *Container) any { return x.Private }) {
		b.set("private", quoteHCL(p.Logical(c.Private)))
	}
	num("uid_base", func(x *Container) uint64 { return uint64(x.UIDBase) })
	num("gid_base", func(x *Container) uint64 { return uint64(x.GIDBase) })
	boolean("dedup", func(x *Container) bool { return !x.NoDedup })
	if want(func(x *Container) any { return x.Sysctl }) {
		b.line("sysctl = {")
		for _, k := range slices.Sorted(maps.Keys(c.Sysctl)) {
			b.line("  " + quoteHCL(k) + " = " + quoteHCL(c.Sysctl[k]))
		}
		b.line("}")
	}
	if want(func(x *Container) any { return x.CPU }) {
		b.block("cpu")
		num("count", func(x *Container) uint64 { return uint64(x.CPU.Count) })
		if want(func(x *Container) any { return x.CPU.Limit }) {
			b.set("limit", quoteHCL(strconv.FormatFloat(c.CPU.Limit, 'f', -1, 64)+"%"))
		}
		num("units", func(x *Container) uint64 { return x.CPU.Units })
		str("mask", func(x *Container) string { return x.CPU.Mask })
		b.end()
	}
	if want(func(x *Container) any { return x.Memory }) {
		b.block("memory")
		size("ram", func(x *Container) uint64 { return x.Memory.RAM })
		size("swap", func(x *Container) uint64 { return x.Memory.Swap })
		b.end()
	}
	if want(func(x *Container) any { return x.Disk }) {
		b.block("disk")
		size("size", func(x *Container) uint64 { return x.Disk.Size })
		num("inodes", func(x *Container) uint64 { return x.Disk.Inodes })
		num("iops_limit", func(x *Container) uint64 { return x.Disk.IOPSLimit })
		size("io_limit", func(x *Container) uint64 { return x.Disk.IOLimit })
		b.end()
	}
	n := c.Network
	nsChanged := want(func(x *Container) any { return []any{x.Network.NameserverInherit, x.Network.Nameservers} })
	sdChanged := want(func(x *Container) any { return x.Network.SearchDomains })
	if nsChanged || sdChanged || len(n.Interfaces) > 0 {
		b.block("network")
		if nsChanged {
			if n.NameserverInherit {
				b.set("nameservers", quoteHCL("inherit"))
			} else {
				var ss []string
				for _, a := range n.Nameservers {
					ss = append(ss, a.String())
				}
				b.set("nameservers", strList(ss))
			}
		}
		list("search_domains", func(x *Container) []string { return x.Network.SearchDomains })
		for _, ifc := range n.Interfaces {
			b.block("interface", ifc.Name)
			var ips []string
			for _, ip := range ifc.IPs {
				ips = append(ips, ip.String())
			}
			if len(ips) > 0 {
				b.set("ip", strList(ips))
			}
			if ifc.Gateway.IsValid() {
				b.set("gateway", quoteHCL(ifc.Gateway.String()))
			}
			if ifc.Gateway6.IsValid() {
				b.set("gateway6", quoteHCL(ifc.Gateway6.String()))
			}
			for _, kv := range [][2]string{{"bridge", ifc.Bridge}, {"mac", ifc.MAC}, {"host_name", ifc.HostName}} {
				if kv[1] != "" {
					b.set(kv[0], quoteHCL(kv[1]))
				}
			}
			if ifc.MTU != 0 {
				b.set("mtu", strconv.Itoa(ifc.MTU))
			}
			b.end()
		}
		b.end()
	}
	if want(func(x *Container) any { return x.Devices }) {
		if len(c.Devices) == 0 {
			b.set("devices", "[]")
		}
		for _, dev := range c.Devices {
			b.block("device")
			b.set("path", quoteHCL(dev.Path))
			b.set("access", quoteHCL(dev.Access))
			b.end()
		}
	}
}
