package spec

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The HCL front end decodes with explicit schemas rather than gohcl struct
// tags: a size may be a string ("512M") or a number, nameservers a list or
// "inherit", and every value keeps its position. Expressions are evaluated
// with a nil EvalContext, so variables and function calls are errors: a
// config file cannot read files or the environment (as Nomad's jobspec2
// does with AllowFS false).

var containerFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "container", LabelNames: []string{"name"}}}}

var globalFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "defaults"}, {Type: "dedup"}, {Type: "container", LabelNames: []string{"name"}},
}}

func attrs(names ...string) []hcl.AttributeSchema {
	out := make([]hcl.AttributeSchema, len(names))
	for i, n := range names {
		out[i] = hcl.AttributeSchema{Name: n}
	}
	return out
}

var containerSchema = &hcl.BodySchema{
	Attributes: attrs("uuid", "name", "description", "state", "onboot", "hostname", "privileged",
		"restart_to_apply", "ostemplate", "templates", "processes", "sysctl", "devices", "stop_timeout",
		"init", "root", "private", "uid_base", "gid_base", "dedup"),
	Blocks: []hcl.BlockHeaderSchema{{Type: "cpu"}, {Type: "memory"}, {Type: "disk"}, {Type: "network"}, {Type: "device"}},
}

var (
	cpuSchema       = &hcl.BodySchema{Attributes: attrs("count", "limit", "units", "mask")}
	memorySchema    = &hcl.BodySchema{Attributes: attrs("ram", "swap")}
	diskSchema      = &hcl.BodySchema{Attributes: attrs("size", "inodes", "iops_limit", "io_limit")}
	deviceSchema    = &hcl.BodySchema{Attributes: attrs("path", "access")}
	networkSchema   = &hcl.BodySchema{Attributes: attrs("nameservers", "search_domains"), Blocks: []hcl.BlockHeaderSchema{{Type: "interface", LabelNames: []string{"name"}}}}
	interfaceSchema = &hcl.BodySchema{Attributes: attrs("ip", "gateway", "gateway6", "mac", "mtu", "bridge", "host_name")}
	dedupSchema     = &hcl.BodySchema{Attributes: attrs("enabled", "schedule", "min_size", "max_size", "min_containers", "dirs", "cache_size")}
)

func toPos(p hcl.Pos, file string) Pos { return Pos{File: file, Line: p.Line, Column: p.Column} }

// fromHCL converts hcl diagnostics.
func fromHCL(hd hcl.Diagnostics, file string) Diagnostics {
	var ds Diagnostics
	for _, d := range hd {
		pos := Pos{File: file}
		if d.Subject != nil {
			pos = toPos(d.Subject.Start, file)
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		sev := SeverityError
		if d.Severity == hcl.DiagWarning {
			sev = SeverityWarning
		}
		ds = append(ds, Diagnostic{Severity: sev, Pos: pos, Message: msg})
	}
	return ds
}

// hclDecoder decodes one container body, collecting diagnostics.
type hclDecoder struct {
	file  string
	c     *Container
	diags Diagnostics
}

func (d *hclDecoder) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	content, hd := body.Content(schema)
	d.diags = append(d.diags, fromHCL(hd, d.file)...)
	return content
}

// value evaluates an attribute with no variables or functions; ok is false
// (and a diagnostic recorded) when it cannot be evaluated or is null.
func (d *hclDecoder) value(field string, a *hcl.Attribute) (cty.Value, bool) {
	d.c.Positions[field] = toPos(a.Range.Start, d.file)
	v, hd := a.Expr.Value(nil)
	if hd.HasErrors() {
		d.diags = append(d.diags, fromHCL(hd, d.file)...)
		return cty.NilVal, false
	}
	if v.IsNull() || !v.IsKnown() {
		return cty.NilVal, false
	}
	v, _ = v.Unmark()
	return v, true
}

func (d *hclDecoder) errf(a *hcl.Attribute, format string, args ...any) {
	d.diags.Errorf(toPos(a.Expr.Range().Start, d.file), format, args...)
}

func typeName(v cty.Value) string { return v.Type().FriendlyName() }

func (d *hclDecoder) str(field string, a *hcl.Attribute, dst *string) {
	v, ok := d.value(field, a)
	if !ok {
		return
	}
	if v.Type() != cty.String {
		d.errf(a, "%s: expected a string, got %s", field, typeName(v))
		return
	}
	*dst = v.AsString()
}

func (d *hclDecoder) boolean(field string, a *hcl.Attribute, dst *bool) {
	v, ok := d.value(field, a)
	if !ok {
		return
	}
	if v.Type() != cty.Bool {
		d.errf(a, "%s: expected true or false, got %s", field, typeName(v))
		return
	}
	*dst = v.True()
}

// uint decodes a whole non-negative number no larger than max.
func (d *hclDecoder) uint(field string, a *hcl.Attribute, max uint64) (uint64, bool) {
	v, ok := d.value(field, a)
	if !ok {
		return 0, false
	}
	if v.Type() == cty.String { // "1000" is accepted, as in ve.conf
		n, err := parseSize(v.AsString(), 1)
		if err != nil || strings.IndexFunc(v.AsString(), func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
			d.errf(a, "%s: expected a whole number, got %q", field, v.AsString())
			return 0, false
		}
		v = cty.NumberUIntVal(n)
	}
	if v.Type() != cty.Number {
		d.errf(a, "%s: expected a whole number, got %s", field, typeName(v))
		return 0, false
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() || bf.Sign() < 0 {
		d.errf(a, "%s: expected a whole non-negative number, got %s", field, bf.Text('g', 10))
		return 0, false
	}
	n, acc := bf.Uint64()
	if acc != big.Exact || n > max {
		d.errf(a, "%s: %s is too large (at most %d)", field, bf.Text('g', 20), max)
		return 0, false
	}
	return n, true
}

// size decodes "512M", "1.5G", "unlimited" or a number of bytes. An
// explicit 0 is an error when zeroOK is false: zero means "no limit" in the
// model, and a written 0 is more likely a mistake than a wish.
func (d *hclDecoder) size(field string, a *hcl.Attribute, dst *uint64, zeroOK bool) {
	v, ok := d.value(field, a)
	if !ok {
		return
	}
	var n uint64
	switch v.Type() {
	case cty.String:
		var err error
		n, err = parseSize(v.AsString(), 1)
		if err == errUnlimited {
			*dst = 0
			return
		}
		if err != nil {
			d.errf(a, "%s: %v", field, err)
			return
		}
	case cty.Number:
		bf := v.AsBigFloat()
		u, acc := bf.Uint64()
		if bf.Sign() < 0 || acc != big.Exact {
			d.errf(a, "%s: expected a whole number of bytes, got %s", field, bf.Text('g', 20))
			return
		}
		n = u
	default:
		d.errf(a, "%s: expected a size such as \"512M\" or a number of bytes, got %s", field, typeName(v))
		return
	}
	if n == 0 && !zeroOK {
		d.errf(a, "%s: 0 is not a usable size; remove the line or write \"unlimited\"", field)
		return
	}
	*dst = n
}

// strList accepts a list of strings; with single, a lone string too.
func (d *hclDecoder) strList(field string, a *hcl.Attribute, single bool) ([]string, bool) {
	v, ok := d.value(field, a)
	if !ok {
		return nil, false
	}
	if v.Type() == cty.String && single {
		return []string{v.AsString()}, true
	}
	if !v.CanIterateElements() || v.Type().IsMapType() || v.Type().IsObjectType() {
		d.errf(a, "%s: expected a list of strings, got %s", field, typeName(v))
		return nil, false
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			d.errf(a, "%s: expected a list of strings, found %s in it", field, typeName(e))
			return nil, false
		}
		out = append(out, e.AsString())
	}
	return out, true
}

func (d *hclDecoder) addr(field string, a *hcl.Attribute, dst *netip.Addr) {
	var s string
	d.str(field, a, &s)
	if s == "" {
		return
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		d.errf(a, "%s: %q is not an IP address", field, s)
		return
	}
	*dst = ip
}

// Limits on HCL nesting. hclsyntax parses by recursive descent, so a file
// of a million "[" or "!" overflows the goroutine stack, which is fatal
// (not a panic that could be recovered). Real config files nest a few
// levels deep; these limits are far above that and far below the stack.
const (
	maxHCLDepth     = 64
	maxHCLOperators = 4096 // in one line of a block, or one list or call
)

// checkHCLDepth lexes data (the lexer is not recursive) and reports
// nesting too deep to parse safely.
func checkHCLDepth(file string, data []byte) Diagnostics {
	var diags Diagnostics
	tokens, _ := hclsyntax.LexConfig(data, file, hcl.InitialPos)
	var open []hclsyntax.TokenType // innermost last
	ops := 0
	for _, tok := range tokens {
		switch tok.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
			hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl, hclsyntax.TokenOHeredoc:
			open = append(open, tok.Type)
			ops++
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenTemplateSeqEnd, hclsyntax.TokenCHeredoc:
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		case hclsyntax.TokenNewline, hclsyntax.TokenEOF:
			// A new line in a block body or object starts a new
			// expression; in a list or call it does not.
			if len(open) == 0 || open[len(open)-1] == hclsyntax.TokenOBrace {
				ops = 0
			}
		case hclsyntax.TokenQuotedLit, hclsyntax.TokenStringLit, hclsyntax.TokenNumberLit, hclsyntax.TokenIdent,
			hclsyntax.TokenComment, hclsyntax.TokenComma, hclsyntax.TokenOQuote, hclsyntax.TokenCQuote,
			hclsyntax.TokenEqual, hclsyntax.TokenDot:
		default:
			ops++
		}
		if len(open) > maxHCLDepth {
			diags.Errorf(toPos(tok.Range.Start, file), "nested more than %d levels deep", maxHCLDepth)
			return diags
		}
		if ops > maxHCLOperators {
			diags.Errorf(toPos(tok.Range.Start, file), "expression with more than %d operators", maxHCLOperators)
			return diags
		}
	}
	return nil
}

// parseHCLFile parses with the depth guard.
func parseHCLFile(file string, data []byte) (*hcl.File, hcl.Diagnostics, Diagnostics) {
	if ds := checkHCLDepth(file, data); ds != nil {
		return nil, nil, ds
	}
	f, hd := hclsyntax.ParseConfig(data, file, hcl.InitialPos)
	return f, hd, fromHCL(hd, file)
}

// ParseHCL decodes every container block of an HCL file, with the defaults
// of g (which may be nil) applied. IDs lists the block labels found, even
// for blocks with errors.
func ParseHCL(file string, data []byte, g *Global, p Paths) (cs []*Container, ids []string, diags Diagnostics) {
	f, hd, diags := parseHCLFile(file, data)
	if f == nil || hd.HasErrors() {
		// Recover the labels a broken file declares so the agent can keep
		// their last good spec.
		if f != nil {
			if body, ok := f.Body.(*hclsyntax.Body); ok {
				for _, b := range body.Blocks {
					if b.Type == "container" && len(b.Labels) == 1 {
						ids = append(ids, b.Labels[0])
					}
				}
			}
		}
		return nil, ids, sortDiags(diags)
	}
	content, hd := f.Body.Content(containerFileSchema)
	diags = append(diags, fromHCL(hd, file)...)
	for _, b := range content.Blocks {
		ids = append(ids, b.Labels[0])
	}
	for _, b := range content.Blocks {
		c, ds := decodeContainer(file, b)
		diags = append(diags, ds...)
		applyDefaults(c, g, p)
		cs = append(cs, c)
	}
	return cs, ids, sortDiags(diags)
}

func decodeContainer(file string, b *hcl.Block) (*Container, Diagnostics) {
	c := &Container{ID: b.Labels[0], Format: FormatHCL, Source: toPos(b.DefRange.Start, file), Positions: map[string]Pos{}}
	d := &hclDecoder{file: file, c: c}
	d.body(b.Body)
	return c, d.diags
}

// body decodes a container (or defaults) body into d.c.
func (d *hclDecoder) body(body hcl.Body) {
	c := d.c
	content := d.content(body, containerSchema)
	if content == nil {
		return
	}
	at := content.Attributes
	for name, a := range at {
		switch name {
		case "uuid":
			d.str(name, a, &c.UUID)
		case "name":
			d.str(name, a, &c.Name)
		case "description":
			d.str(name, a, &c.Description)
		case "state":
			var s string
			d.str(name, a, &s)
			c.State = State(s) // checked by checkState
		case "onboot":
			d.boolean(name, a, &c.OnBoot)
		case "hostname":
			d.str(name, a, &c.Hostname)
		case "privileged":
			d.boolean(name, a, &c.Privileged)
		case "restart_to_apply":
			d.boolean(name, a, &c.RestartToApply)
		case "ostemplate":
			d.str(name, a, &c.OSTemplate)
		case "templates":
			c.Templates, _ = d.strList(name, a, true)
		case "processes":
			c.Processes, _ = d.uint(name, a, 1<<32)
		case "sysctl":
			d.sysctl(a)
		case "devices":
			d.devices(a)
		case "stop_timeout":
			d.duration(name, a, &c.StopTimeout)
		case "init":
			c.Init, _ = d.strList(name, a, true)
			if len(c.Init) == 0 {
				d.errf(a, "init: must name a program")
			}
		case "root":
			d.str(name, a, &c.Root)
		case "private":
			d.str(name, a, &c.Private)
		case "uid_base":
			n, _ := d.uint(name, a, 1<<32-1)
			c.UIDBase = uint32(n)
		case "gid_base":
			n, _ := d.uint(name, a, 1<<32-1)
			c.GIDBase = uint32(n)
		case "dedup":
			on := true
			d.boolean(name, a, &on)
			c.NoDedup = !on
		}
	}
	seen := map[string]bool{}
	for _, blk := range content.Blocks {
		if blk.Type != "device" {
			if seen[blk.Type] {
				d.diags.Errorf(toPos(blk.DefRange.Start, d.file), "duplicate %s block", blk.Type)
				continue
			}
			seen[blk.Type] = true
		}
		d.c.Positions[blk.Type] = toPos(blk.DefRange.Start, d.file)
		switch blk.Type {
		case "cpu":
			d.cpu(blk.Body)
		case "memory":
			ct := d.content(blk.Body, memorySchema)
			if a := ct.Attributes["ram"]; a != nil {
				d.size("memory.ram", a, &c.Memory.RAM, false)
			}
			if a := ct.Attributes["swap"]; a != nil {
				d.size("memory.swap", a, &c.Memory.Swap, true)
			}
		case "disk":
			ct := d.content(blk.Body, diskSchema)
			if a := ct.Attributes["size"]; a != nil {
				d.size("disk.size", a, &c.Disk.Size, false)
			}
			if a := ct.Attributes["inodes"]; a != nil {
				c.Disk.Inodes, _ = d.uint("disk.inodes", a, 1<<32-1)
			}
			if a := ct.Attributes["iops_limit"]; a != nil {
				c.Disk.IOPSLimit, _ = d.uint("disk.iops_limit", a, 1<<40)
			}
			if a := ct.Attributes["io_limit"]; a != nil {
				d.size("disk.io_limit", a, &c.Disk.IOLimit, true)
			}
		case "network":
			d.network(blk.Body)
		case "device":
			ct := d.content(blk.Body, deviceSchema)
			var dev Device
			field := fmt.Sprintf("devices.%d", len(c.Devices))
			if a := ct.Attributes["path"]; a != nil {
				d.str(field+".path", a, &dev.Path)
			} else {
				d.diags.Errorf(toPos(blk.DefRange.Start, d.file), "device: path is required")
			}
			dev.Access = "rw"
			if a := ct.Attributes["access"]; a != nil {
				d.str(field+".access", a, &dev.Access)
			}
			c.Devices = append(c.Devices, dev)
			c.Positions[field] = toPos(blk.DefRange.Start, d.file)
		}
	}
}

func (d *hclDecoder) cpu(body hcl.Body) {
	c := d.c
	ct := d.content(body, cpuSchema)
	if a := ct.Attributes["count"]; a != nil {
		n, _ := d.uint("cpu.count", a, 1<<20) // 0: no limit, as in legacy CPUS
		c.CPU.Count = int(n)
	}
	if a := ct.Attributes["limit"]; a != nil {
		v, ok := d.value("cpu.limit", a)
		if ok {
			switch v.Type() {
			case cty.String:
				f, err := parsePercent(v.AsString())
				if err != nil {
					d.errf(a, "cpu.limit: %v", err)
				}
				c.CPU.Limit = f
			case cty.Number:
				f, _ := v.AsBigFloat().Float64()
				if f < 0 {
					d.errf(a, "cpu.limit: negative")
				}
				c.CPU.Limit = f
			default:
				d.errf(a, "cpu.limit: expected a percentage such as \"150%%\", got %s", typeName(v))
			}
		}
	}
	if a := ct.Attributes["units"]; a != nil {
		c.CPU.Units, _ = d.uint("cpu.units", a, 1<<32)
	}
	if a := ct.Attributes["mask"]; a != nil {
		d.str("cpu.mask", a, &c.CPU.Mask)
	}
}

func (d *hclDecoder) network(body hcl.Body) {
	c := d.c
	ct := d.content(body, networkSchema)
	if a := ct.Attributes["nameservers"]; a != nil {
		list, ok := d.strList("network.nameservers", a, true)
		if ok {
			if err := setNameservers(&c.Network, list); err != nil {
				d.errf(a, "network.nameservers: %v", err)
			}
		}
	}
	if a := ct.Attributes["search_domains"]; a != nil {
		c.Network.SearchDomains, _ = d.strList("network.search_domains", a, true)
	}
	for _, blk := range ct.Blocks {
		name := blk.Labels[0]
		field := "network.interface." + name
		if c.Interface(name) != nil {
			d.diags.Errorf(toPos(blk.DefRange.Start, d.file), "interface %q declared twice", name)
			continue
		}
		c.Positions[field] = toPos(blk.DefRange.Start, d.file)
		ifc := Interface{Name: name}
		ic := d.content(blk.Body, interfaceSchema)
		for an, a := range ic.Attributes {
			switch an {
			case "ip":
				list, ok := d.strList(field+".ip", a, true)
				if !ok {
					continue
				}
				for _, s := range list {
					pfx, err := parseIfAddr(s)
					if err != nil {
						d.errf(a, "%s.ip: %v", field, err)
						continue
					}
					ifc.IPs = append(ifc.IPs, pfx)
				}
			case "gateway":
				d.addr(field+".gateway", a, &ifc.Gateway)
			case "gateway6":
				d.addr(field+".gateway6", a, &ifc.Gateway6)
			case "mac":
				d.str(field+".mac", a, &ifc.MAC)
				ifc.MAC = normalizeMAC(ifc.MAC)
			case "mtu":
				n, _ := d.uint(field+".mtu", a, 1<<20)
				ifc.MTU = int(n)
			case "bridge":
				d.str(field+".bridge", a, &ifc.Bridge)
			case "host_name":
				d.str(field+".host_name", a, &ifc.HostName)
			}
		}
		c.Network.Interfaces = append(c.Network.Interfaces, ifc)
	}
}

// parseIfAddr parses "10.0.0.2/24" or a bare address (a host route).
func parseIfAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address with a prefix length (CIDR)", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (d *hclDecoder) sysctl(a *hcl.Attribute) {
	v, ok := d.value("sysctl", a)
	if !ok {
		return
	}
	if !v.Type().IsObjectType() && !v.Type().IsMapType() {
		d.errf(a, "sysctl: expected a map such as { \"net.ipv4.ip_forward\" = \"1\" }, got %s", typeName(v))
		return
	}
	m := map[string]string{}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		switch {
		case e.IsNull():
			d.errf(a, "sysctl: %s has no value", k.AsString())
		case e.Type() == cty.String:
			m[k.AsString()] = e.AsString()
		case e.Type() == cty.Number:
			m[k.AsString()] = e.AsBigFloat().Text('f', -1)
		case e.Type() == cty.Bool:
			m[k.AsString()] = map[bool]string{true: "1", false: "0"}[e.True()]
		default:
			d.errf(a, "sysctl: %s: expected a string or number, got %s", k.AsString(), typeName(e))
		}
	}
	d.c.Sysctl = m
}

func (d *hclDecoder) devices(a *hcl.Attribute) {
	v, ok := d.value("devices", a)
	if !ok {
		return
	}
	if !v.CanIterateElements() || v.Type().IsMapType() || v.Type().IsObjectType() {
		d.errf(a, "devices: expected a list of { path = \"/dev/fuse\", access = \"rw\" }, got %s", typeName(v))
		return
	}
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			continue
		}
		dev := Device{Access: "rw"}
		switch {
		case e.Type() == cty.String: // "/dev/fuse" or "/dev/fuse:rw"
			path, access, ok := strings.Cut(e.AsString(), ":")
			dev.Path = path
			if ok {
				dev.Access = access
			}
		case e.Type().IsObjectType() || e.Type().IsMapType():
			for it2 := e.ElementIterator(); it2.Next(); {
				k, ev := it2.Element()
				if ev.IsNull() || ev.Type() != cty.String {
					d.errf(a, "devices: %s: expected a string", k.AsString())
					continue
				}
				switch k.AsString() {
				case "path":
					dev.Path = ev.AsString()
				case "access":
					dev.Access = ev.AsString()
				default:
					d.errf(a, "devices: unknown key %q (path, access)", k.AsString())
				}
			}
		default:
			d.errf(a, "devices: expected an object, got %s", typeName(e))
			continue
		}
		d.c.Devices = append(d.c.Devices, dev)
	}
}

func (d *hclDecoder) duration(field string, a *hcl.Attribute, dst *time.Duration) {
	v, ok := d.value(field, a)
	if !ok {
		return
	}
	switch v.Type() {
	case cty.String:
		t, err := time.ParseDuration(v.AsString())
		if err != nil || t <= 0 {
			d.errf(a, "%s: %q is not a positive duration such as \"30s\"", field, v.AsString())
			return
		}
		*dst = t
	case cty.Number:
		n, acc := v.AsBigFloat().Uint64()
		if acc != big.Exact || n == 0 || n > 1<<31 {
			d.errf(a, "%s: expected a positive number of seconds", field)
			return
		}
		*dst = time.Duration(n) * time.Second
	default:
		d.errf(a, "%s: expected a duration such as \"30s\", got %s", field, typeName(v))
	}
}

// ParseGlobalHCL parses a global HCL file: a defaults block (the fields of
// a container) and a dedup block.
func ParseGlobalHCL(file string, data []byte) (*Global, Diagnostics) {
	g := DefaultGlobal()
	g.Source = Pos{File: file}
	f, hd, diags := parseHCLFile(file, data)
	if f == nil || hd.HasErrors() {
		return g, sortDiags(diags)
	}
	content, hd := f.Body.Content(globalFileSchema)
	diags = append(diags, fromHCL(hd, file)...)
	for _, b := range content.Blocks {
		switch b.Type {
		case "container":
			diags.Errorf(toPos(b.DefRange.Start, file), "container blocks belong in the config directory, not the global file")
		case "defaults":
			d := &hclDecoder{file: file, c: &Container{Positions: map[string]Pos{}}}
			d.body(b.Body)
			for _, k := range []string{"uuid", "name", "hostname", "network"} {
				if _, ok := d.c.Positions[k]; ok && k != "network" {
					d.diags.Errorf(d.c.Positions[k], "defaults: %s cannot have a default", k)
				}
			}
			if len(d.c.Network.Interfaces) > 0 {
				d.diags.Errorf(toPos(b.DefRange.Start, file), "defaults: interfaces cannot have a default")
			}
			g.Defaults = *d.c
			diags = append(diags, d.diags...)
		case "dedup":
			diags = append(diags, decodeDedup(file, b.Body, &g.Dedup)...)
		}
	}
	return g, sortDiags(diags)
}

func decodeDedup(file string, body hcl.Body, dc *DedupConfig) Diagnostics {
	d := &hclDecoder{file: file, c: &Container{Source: toPos(body.MissingItemRange().Start, file), Positions: map[string]Pos{}}}
	ct := d.content(body, dedupSchema)
	if ct == nil {
		return d.diags
	}
	for name, a := range ct.Attributes {
		field := "dedup." + name
		switch name {
		case "enabled":
			d.boolean(field, a, &dc.Enabled)
		case "schedule":
			d.str(field, a, &dc.Schedule)
		case "min_size":
			d.size(field, a, &dc.MinSize, true)
		case "max_size":
			d.size(field, a, &dc.MaxSize, false)
		case "cache_size":
			d.size(field, a, &dc.CacheSize, false)
		case "min_containers":
			n, ok := d.uint(field, a, 1<<20)
			if ok && n < 1 {
				d.errf(a, "%s: at least 1", field)
			} else if ok {
				dc.MinContainers = int(n)
			}
		case "dirs":
			dc.Dirs, _ = d.strList(field, a, false)
		}
	}
	d.diags = append(d.diags, checkDedup(dc, func(f string) Pos { return d.c.PosOf("dedup." + f) })...)
	return d.diags
}
