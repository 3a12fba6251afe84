package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vzd/actuators/internal/safefile"
	"vzd/spec"
)

// RouteProtocol marks the routes vzd adds, on the host and inside
// containers (rtnetlink protocol number; "ip route" shows it as 118 unless
// /etc/iproute2/rt_protos names it). Changing it orphans existing routes.
const RouteProtocol netlink.RouteProtocol = 118

// Actuator converges containers' networks in one host network namespace.
// Its methods are safe for concurrent use on different containers.
type Actuator struct {
	cfg    Config
	log    *slog.Logger
	hostNS netns.NsHandle
	h      *netlink.Handle // in the host namespace
}

// New opens the host namespace named by cfg.HostNS (or the current one).
func New(cfg Config) (*Actuator, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	var ns netns.NsHandle
	var err error
	if cfg.HostNS == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(cfg.HostNS)
	}
	if err != nil {
		return nil, fmt.Errorf("open host netns %q: %w", cfg.HostNS, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in host netns %q: %w", cfg.HostNS, err)
	}
	// Strict checking lets the kernel filter route dumps by interface and
	// protocol, so finding one host end's routes does not cost a copy of
	// every route of the node. The library filters again, so a kernel
	// without it only costs time.
	if err := h.SetStrictCheck(true); err != nil {
		cfg.Log.Debug("netlink strict check unavailable", "err", err)
	}
	return &Actuator{cfg: cfg, log: cfg.Log.With("actuator", "network"), hostNS: ns, h: h}, nil
}

// Close releases the host namespace.
func (a *Actuator) Close() error {
	a.h.Close()
	return a.hostNS.Close()
}

// container is an open container network namespace.
type container struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func openContainer(pid int) (*container, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("container not running (pid %d)", pid)
	}
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in netns of pid %d: %w", pid, err)
	}
	return &container{ns: ns, h: h}, nil
}

func (c *container) close() {
	c.h.Close()
	c.ns.Close()
}

// dump runs a netlink dump again when the kernel says it was interrupted:
// links, addresses and routes come and go while many containers are set up
// or torn down at once, and a half dump must not be taken for the whole.
func dump[T any](f func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 9 {
			return v, err
		}
	}
}

func linkList(h *netlink.Handle) ([]netlink.Link, error) { return dump(h.LinkList) }

// hostEnds returns the host ends of container c, by interface name.
func (a *Actuator) hostEnds(c *spec.Container) (map[string]netlink.Link, error) {
	links, err := linkList(a.h)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make([]string, len(c.Network.Interfaces))
	for i, ifc := range c.Network.Interfaces {
		names[i] = ifc.Name
	}
	ends := map[string]netlink.Link{}
	for _, l := range links {
		if ifname, ok := endOf(l, c.ID, names...); ok {
			ends[ifname] = l
		}
	}
	return ends, nil
}

// endOf reports which interface of container id the host link l is the
// end of. Its alias says so. The kernel ignores IFLA_IFALIAS when it
// creates a link, so an agent killed between creating a pair and setting
// its alias leaves an end without one: that end is known by the MAC
// address vzd derives from the container and the interface (one of
// ifnames), which the creating request itself set.
func endOf(l netlink.Link, id string, ifnames ...string) (string, bool) {
	la := l.Attrs()
	if cid, ifname, ok := parseAlias(la.Alias); ok {
		return ifname, cid == id
	}
	if la.Alias != "" || l.Type() != "veth" {
		return "", false
	}
	for _, ifname := range ifnames {
		if slices.Equal(la.HardwareAddr, hostMAC(id, ifname)) {
			return ifname, true
		}
	}
	return "", false
}

// endsOf finds the host ends of a running container without listing every
// link of the node (which would make a pass over all containers quadratic):
// by the names c gives them, then through the peers of the veths inside
// the container, which also finds ends c no longer names or that were
// renamed. Only the host end's alias or MAC (endOf), which the container
// cannot change, decides that a link is c's.
func (a *Actuator) endsOf(c *spec.Container, names []string, ct *container) (map[string]netlink.Link, error) {
	ends := map[string]netlink.Link{}
	take := func(l netlink.Link, ifname string) {
		if ifname, ok := endOf(l, c.ID, ifname); ok {
			if _, dup := ends[ifname]; !dup {
				ends[ifname] = l
			}
		}
	}
	for i, name := range names {
		if l, err := a.h.LinkByName(name); err == nil {
			take(l, c.Network.Interfaces[i].Name)
		}
	}
	inside, err := linkList(ct.h)
	if err != nil {
		return nil, fmt.Errorf("list container links: %w", err)
	}
	for _, l := range inside {
		if l.Type() != "veth" || l.Attrs().ParentIndex == 0 {
			continue
		}
		if _, ok := ends[l.Attrs().Name]; ok {
			continue
		}
		if hl, err := a.h.LinkByIndex(l.Attrs().ParentIndex); err == nil {
			take(hl, l.Attrs().Name)
		}
	}
	return ends, nil
}

// plan collects what one Apply must do beyond the links themselves.
type plan struct {
	sysctls     []sysctl
	nodeAddrs   map[netip.Addr]string // addresses on host-namespace links, lazily read
	default4    bool                  // a container default route was chosen
	default6    bool
	wantRoutes  map[routeKey]bool // container routes of RouteProtocol to keep
	needRestart []string
}

type routeKey struct {
	link int
	gw   netip.Addr
}

// Apply converges the network of the running container c whose init is
// pid: it creates missing veth pairs, finds existing ones (by alias, so an
// agent restart recreates nothing), removes those c no longer names and
// sets MTU, MAC, master, addresses, routes, proxy entries and the
// hostname, all live. It is idempotent. Errors of one interface do not
// stop the others; they are joined. needsRestart lists what could not be
// applied to the running container.
func (a *Actuator) Apply(ctx context.Context, c *spec.Container, pid int) (needsRestart []string, err error) {
	ct, err := openContainer(pid)
	if err != nil {
		return nil, fmt.Errorf("network of %s: %w", c.ID, err)
	}
	defer ct.close()
	if ct.ns.Equal(a.hostNS) {
		return nil, fmt.Errorf("network of %s: pid %d is in the host network namespace", c.ID, pid)
	}
	log := a.log.With("container", c.ID)

	names := hostIfNames(a.cfg.Prefix, c)
	ends, err := a.endsOf(c, names, ct)
	if err != nil {
		return nil, fmt.Errorf("network of %s: %w", c.ID, err)
	}
	p := &plan{wantRoutes: map[routeKey]bool{}}
	var errs []error
	// Interfaces c no longer names go first, so that an address or a host
	// end name moving to another interface is free when that one is set.
	for ifname, l := range ends {
		if c.Interface(ifname) != nil {
			continue
		}
		if err := a.removeEnd(l); err != nil {
			errs = append(errs, fmt.Errorf("remove interface %s of %s: %w", ifname, c.ID, err))
			continue
		}
		log.Info("interface removed", "interface", ifname, "host_end", l.Attrs().Name)
	}
	for i := range c.Network.Interfaces {
		ifc := &c.Network.Interfaces[i]
		if err := ctx.Err(); err != nil {
			return p.needRestart, err
		}
		if err := a.applyInterface(log, c, ifc, names[i], ends[ifc.Name], ct, p); err != nil {
			errs = append(errs, fmt.Errorf("interface %s of %s: %w", ifc.Name, c.ID, err))
		}
	}
	if err := a.pruneContainerRoutes(ct, p); err != nil {
		errs = append(errs, fmt.Errorf("routes of %s: %w", c.ID, err))
	}
	if lo, err := ct.h.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := ct.h.LinkSetUp(lo); err != nil {
			errs = append(errs, fmt.Errorf("lo of %s up: %w", c.ID, err))
		}
	}
	if c.Hostname != "" {
		changed, err := setHostname(pid, c.Hostname)
		if err != nil {
			errs = append(errs, fmt.Errorf("hostname of %s: %w", c.ID, err))
		} else if changed {
			log.Info("hostname set", "hostname", c.Hostname)
		}
	}
	if err := a.setSysctls(p.sysctls); err != nil {
		errs = append(errs, err)
	}
	return p.needRestart, errors.Join(errs...)
}

func (a *Actuator) applyInterface(log *slog.Logger, c *spec.Container, ifc *spec.Interface, hostName string, end netlink.Link, ct *container, p *plan) error {
	log = log.With("interface", ifc.Name, "host_end", hostName)
	mac := MAC(c.ID, ifc.Name)
	if ifc.MAC != "" {
		m, err := net.ParseMAC(ifc.MAC)
		if err != nil {
			return fmt.Errorf("mac %q: %w", ifc.MAC, err)
		}
		mac = m
	}
	mtu := ifc.MTU
	if mtu == 0 {
		mtu = 1500
	}
	master := 0
	if !ifc.Routed() {
		br, err := a.h.LinkByName(ifc.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", ifc.Bridge, err)
		}
		if br.Type() != "bridge" {
			return fmt.Errorf("bridge %s is a %s, not a bridge", ifc.Bridge, br.Type())
		}
		master = br.Attrs().Index
	}

	// The container end, when the host end exists and its peer is this
	// interface in this container's namespace.
	var peer netlink.Link
	if end != nil {
		peer = a.peerOf(end, ifc.Name, ct)
		if peer == nil {
			// A pair left from an earlier namespace of this container, or
			// one whose container end was renamed: replace it.
			if err := a.removeEnd(end); err != nil {
				return err
			}
			log.Info("stale veth removed")
			end = nil
		}
	}
	if end == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = hostName
		attrs.MTU = mtu
		attrs.Alias = alias(c.ID, ifc.Name)
		attrs.Flags = net.FlagUp
		attrs.HardwareAddr = hostMAC(c.ID, ifc.Name)
		veth := &netlink.Veth{
			LinkAttrs:        attrs,
			PeerName:         ifc.Name,
			PeerHardwareAddr: mac,
			PeerNamespace:    netlink.NsFd(ct.ns),
			PeerMTU:          uint32(mtu),
		}
		err := a.h.LinkAdd(veth)
		if errors.Is(err, unix.EEXIST) && a.removeOrphan(hostName, c.ID, ifc.Name) {
			err = a.h.LinkAdd(veth)
		}
		if err != nil {
			return fmt.Errorf("create veth %s (peer %s): %w", hostName, ifc.Name, err)
		}
		// The kernel ignores IFLA_IFALIAS when it creates a link.
		if err := a.h.LinkSetAlias(veth, attrs.Alias); err != nil {
			a.h.LinkDel(veth)
			return fmt.Errorf("alias of %s: %w", hostName, err)
		}
		end = veth
		log.Info("veth created", "host_index", attrs.Index, "mac", mac)
	} else if end.Attrs().Name != hostName {
		// The spec renamed the host end: rename it in place.
		if err := a.h.LinkSetDown(end); err != nil {
			return fmt.Errorf("rename %s: %w", end.Attrs().Name, err)
		}
		if err := a.h.LinkSetName(end, hostName); err != nil {
			return fmt.Errorf("rename %s to %s: %w", end.Attrs().Name, hostName, err)
		}
		log.Info("host end renamed", "old", end.Attrs().Name)
		end.Attrs().Name = hostName
		end.Attrs().Flags &^= net.FlagUp
	}
	if peer == nil {
		var err error
		if peer, err = ct.h.LinkByName(ifc.Name); err != nil {
			return fmt.Errorf("container end %s: %w", ifc.Name, err)
		}
	}

	// Host end.
	ea := end.Attrs()
	if want := alias(c.ID, ifc.Name); ea.Alias != want {
		// An end whose creator died before it set the alias (endOf).
		if err := a.h.LinkSetAlias(end, want); err != nil {
			return fmt.Errorf("alias of %s: %w", hostName, err)
		}
		log.Info("host end alias set")
		ea.Alias = want
	}
	if ea.MTU != mtu {
		if err := a.h.LinkSetMTU(end, mtu); err != nil {
			return fmt.Errorf("mtu of %s: %w", hostName, err)
		}
	}
	if ea.MasterIndex != master {
		var err error
		if master == 0 {
			err = a.h.LinkSetNoMaster(end)
		} else {
			err = a.h.LinkSetMasterByIndex(end, master)
		}
		if err != nil {
			return fmt.Errorf("master of %s: %w", hostName, err)
		}
		log.Info("host end master set", "bridge", ifc.Bridge)
	}
	if ea.Flags&net.FlagUp == 0 {
		if err := a.h.LinkSetUp(end); err != nil {
			return fmt.Errorf("%s up: %w", hostName, err)
		}
	}

	// Container end.
	pa := peer.Attrs()
	if pa.MTU != mtu {
		if err := ct.h.LinkSetMTU(peer, mtu); err != nil {
			return fmt.Errorf("mtu of %s: %w", ifc.Name, err)
		}
	}
	if !slices.Equal(pa.HardwareAddr, mac) {
		if err := ct.h.LinkSetHardwareAddr(peer, mac); err != nil {
			p.needRestart = append(p.needRestart, fmt.Sprintf("mac of %s: %v", ifc.Name, err))
		} else {
			log.Info("mac set", "mac", mac)
		}
	}
	if pa.Flags&net.FlagUp == 0 {
		if err := ct.h.LinkSetUp(peer); err != nil {
			return fmt.Errorf("%s up: %w", ifc.Name, err)
		}
	}

	var errs []error
	if err := a.convergeAddrs(log, ifc, peer, ct); err != nil {
		errs = append(errs, err)
	}
	if err := a.convergeHostSide(log, ifc, end, p); err != nil {
		errs = append(errs, err)
	}
	if err := a.convergeDefaults(ifc, peer, ct, p); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeOrphan deletes the link named name when it is a host end of
// container id whose container end was not found (its namespace lingers
// after the container restarted), and reports whether it did.
func (a *Actuator) removeOrphan(name, id, ifname string) bool {
	l, err := a.h.LinkByName(name)
	if err != nil {
		return false
	}
	if _, ok := endOf(l, id, ifname); !ok {
		return false
	}
	return a.removeEnd(l) == nil
}

// peerOf returns the container end of end when it is the interface named
// ifname in ct's namespace, else nil.
func (a *Actuator) peerOf(end netlink.Link, ifname string, ct *container) netlink.Link {
	if end.Type() != "veth" {
		return nil
	}
	peer, err := ct.h.LinkByName(ifname)
	if err != nil || peer.Type() != "veth" {
		return nil
	}
	// Interface indexes are per namespace, so also check that the host
	// end's peer lives in this container's namespace.
	nsid, err := a.h.GetNetNsIdByFd(int(ct.ns))
	if err != nil || nsid < 0 || end.Attrs().NetNsID != nsid {
		return nil
	}
	if end.Attrs().ParentIndex != peer.Attrs().Index || peer.Attrs().ParentIndex != end.Attrs().Index {
		return nil
	}
	return peer
}

func addrFlags(ifc *spec.Interface, p netip.Prefix) int {
	// No duplicate address detection: the addresses are unique by
	// validation, and DAD would hold an IPv6 address unusable for a second.
	f := 0
	if p.Addr().Is6() {
		f |= unix.IFA_F_NODAD
	}
	if ifc.Routed() {
		// All of a routed container's traffic goes via the host end,
		// even to its "own" subnet, which lives on other host ends.
		f |= unix.IFA_F_NOPREFIXROUTE
	}
	return f
}

func toNetlinkAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func fromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// convergeAddrs makes the container end's addresses those of ifc (the
// kernel's IPv6 link-local address stays).
func (a *Actuator) convergeAddrs(log *slog.Logger, ifc *spec.Interface, peer netlink.Link, ct *container) error {
	have, err := dump(func() ([]netlink.Addr, error) { return ct.h.AddrList(peer, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", ifc.Name, err)
	}
	want := map[netip.Prefix]bool{}
	for _, p := range ifc.IPs {
		want[p] = true
	}
	var errs []error
	for _, ad := range have {
		p, ok := fromIPNet(ad.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if want[p] && ad.Flags&unix.IFA_F_NOPREFIXROUTE == addrFlags(ifc, p)&unix.IFA_F_NOPREFIXROUTE {
			delete(want, p)
			continue
		}
		if err := ct.h.AddrDel(peer, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", p, ifc.Name, err))
			continue
		}
		log.Info("address removed", "addr", p)
	}
	for _, p := range ifc.IPs {
		if !want[p] {
			continue
		}
		ad := toNetlinkAddr(p)
		ad.Flags = addrFlags(ifc, p)
		if err := ct.h.AddrAdd(peer, ad); err != nil {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", p, ifc.Name, err))
			continue
		}
		log.Info("address added", "addr", p)
	}
	return errors.Join(errs...)
}

// convergeHostSide sets the routed gateway addresses, host routes and proxy
// entries of a routed interface, and removes them from a bridged one.
func (a *Actuator) convergeHostSide(log *slog.Logger, ifc *spec.Interface, end netlink.Link, p *plan) error {
	var errs []error
	want := map[netip.Prefix]bool{}
	var has4, has6 bool
	if ifc.Routed() {
		for _, pr := range ifc.IPs {
			addr := pr.Addr()
			if owner, ok := a.nodeAddr(p, addr); ok {
				errs = append(errs, fmt.Errorf("address %s is already on the node (%s)", addr, owner))
				continue
			}
			want[netip.PrefixFrom(addr, addr.BitLen())] = true
			has4 = has4 || addr.Is4()
			has6 = has6 || addr.Is6()
		}
	}

	// Gateway addresses on the host end.
	gws := map[netip.Prefix]bool{}
	if has4 {
		gws[netip.PrefixFrom(Gateway4, 32)] = true
	}
	if has6 {
		gws[netip.PrefixFrom(Gateway6, 64)] = true
	}
	have, err := dump(func() ([]netlink.Addr, error) { return a.h.AddrList(end, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", end.Attrs().Name, err)
	}
	for _, ad := range have {
		pr, ok := fromIPNet(ad.IPNet)
		if !ok || (pr.Addr() != Gateway4 && pr.Addr() != Gateway6) {
			continue
		}
		if gws[pr] {
			delete(gws, pr)
			continue
		}
		if err := a.h.AddrDel(end, &ad); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", pr, end.Attrs().Name, err))
		}
	}
	for pr := range gws {
		ad := toNetlinkAddr(pr)
		ad.Scope = unix.RT_SCOPE_LINK
		if pr.Addr().Is6() {
			ad.Flags = unix.IFA_F_NODAD
		}
		if err := a.h.AddrAdd(end, ad); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", pr, end.Attrs().Name, err))
		}
	}

	// Host routes to the container's addresses.
	routes, err := dump(func() ([]netlink.Route, error) {
		return a.h.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: end.Attrs().Index, Protocol: RouteProtocol},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("routes via %s: %w", end.Attrs().Name, err)
	}
	for _, r := range routes {
		dst, ok := fromIPNet(r.Dst)
		if !ok {
			continue
		}
		if want[dst] {
			delete(want, dst)
			continue
		}
		if err := a.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", dst, err))
			continue
		}
		if err := a.delProxy(dst.Addr()); err != nil {
			errs = append(errs, err)
		}
		log.Info("route removed", "dst", dst)
	}
	for dst := range want {
		r := &netlink.Route{
			LinkIndex: end.Attrs().Index,
			Dst:       toNetlinkAddr(dst).IPNet,
			Scope:     netlink.SCOPE_LINK,
			Protocol:  RouteProtocol,
		}
		if err := a.h.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("address %s is already routed on the node", dst.Addr())
			}
			errs = append(errs, fmt.Errorf("route %s via %s: %w", dst, end.Attrs().Name, err))
			continue
		}
		log.Info("route added", "dst", dst)
	}
	// Proxy entries are re-set every time: they are cheap and not tied to
	// the host end, so this also repairs one removed behind vzd's back.
	for _, pr := range ifc.IPs {
		if ifc.Routed() {
			if _, ok := a.nodeAddr(p, pr.Addr()); !ok {
				if err := a.addProxy(pr.Addr()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}

	if has4 {
		p.sysctls = append(p.sysctls,
			sysctl{"ipv4/ip_forward", "1"},
			sysctl{"ipv4/conf/" + end.Attrs().Name + "/proxy_arp", "1"})
	}
	if has6 {
		p.sysctls = append(p.sysctls, sysctl{"ipv6/conf/all/forwarding", "1"})
		if a.cfg.Uplink != "" {
			p.sysctls = append(p.sysctls, sysctl{"ipv6/conf/" + a.cfg.Uplink + "/proxy_ndp", "1"})
		}
	}
	return errors.Join(errs...)
}

// nodeAddr reports whether addr is an address of the host namespace (the
// kernel routes it locally), with the link that holds it when known.
func (a *Actuator) nodeAddr(p *plan, addr netip.Addr) (string, bool) {
	if v, ok := p.nodeAddrs[addr]; ok {
		return v, v != ""
	}
	if p.nodeAddrs == nil {
		p.nodeAddrs = map[netip.Addr]string{}
	}
	owner := ""
	if rs, err := a.h.RouteGet(addr.AsSlice()); err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
		owner = "local"
		if addrs, err := dump(func() ([]netlink.Addr, error) { return a.h.AddrList(nil, netlink.FAMILY_ALL) }); err == nil {
			for _, ad := range addrs {
				if pr, ok := fromIPNet(ad.IPNet); ok && pr.Addr() == addr {
					if l, err := a.h.LinkByIndex(ad.LinkIndex); err == nil {
						owner = l.Attrs().Name
					}
				}
			}
		}
	}
	p.nodeAddrs[addr] = owner
	return owner, owner != ""
}

func (a *Actuator) uplink() (netlink.Link, error) {
	if a.cfg.Uplink == "" {
		return nil, nil
	}
	l, err := a.h.LinkByName(a.cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", a.cfg.Uplink, err)
	}
	return l, nil
}

func proxyEntry(up netlink.Link, addr netip.Addr) *netlink.Neigh {
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	return &netlink.Neigh{LinkIndex: up.Attrs().Index, Family: fam, Flags: netlink.NTF_PROXY, IP: addr.AsSlice()}
}

// addProxy makes the node answer ARP/NDP for addr on the uplink.
func (a *Actuator) addProxy(addr netip.Addr) error {
	up, err := a.uplink()
	if up == nil {
		return err
	}
	if err := a.h.NeighSet(proxyEntry(up, addr)); err != nil {
		return fmt.Errorf("proxy entry %s on %s: %w", addr, a.cfg.Uplink, err)
	}
	return nil
}

func (a *Actuator) delProxy(addr netip.Addr) error {
	up, err := a.uplink()
	if up == nil {
		return err
	}
	if err := a.h.NeighDel(proxyEntry(up, addr)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove proxy entry %s on %s: %w", addr, a.cfg.Uplink, err)
	}
	return nil
}

// convergeDefaults sets the container's default routes through ifc: a
// routed interface points them at the host end's gateway addresses, a
// bridged one at the spec's gateways. The first interface that can carry
// a family's default route gets it.
func (a *Actuator) convergeDefaults(ifc *spec.Interface, peer netlink.Link, ct *container, p *plan) error {
	var has4, has6 bool
	for _, pr := range ifc.IPs {
		has4 = has4 || pr.Addr().Is4()
		has6 = has6 || pr.Addr().Is6()
	}
	gw4, gw6 := ifc.Gateway, ifc.Gateway6
	onlink := false
	if ifc.Routed() {
		onlink = true
		if !gw4.IsValid() && has4 {
			gw4 = Gateway4
		}
		if !gw6.IsValid() && has6 {
			gw6 = Gateway6
		}
	}
	var errs []error
	for _, gw := range []netip.Addr{gw4, gw6} {
		if !gw.IsValid() {
			continue
		}
		fam, dst := netlink.FAMILY_V4, netip.MustParsePrefix("0.0.0.0/0")
		taken := &p.default4
		if gw.Is6() {
			fam, dst, taken = netlink.FAMILY_V6, netip.MustParsePrefix("::/0"), &p.default6
		}
		if *taken {
			continue
		}
		*taken = true
		r := &netlink.Route{
			Family:    fam,
			LinkIndex: peer.Attrs().Index,
			Dst:       toNetlinkAddr(dst).IPNet,
			Gw:        gw.AsSlice(),
			Protocol:  RouteProtocol,
		}
		if onlink && gw.Is4() {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		p.wantRoutes[routeKey{peer.Attrs().Index, gw}] = true
		if exists(ct, r) {
			continue
		}
		if err := ct.h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("default route via %s dev %s: %w", gw, ifc.Name, err))
		}
	}
	return errors.Join(errs...)
}

// exists reports whether the container already has default route r, so
// that a converged container costs a lookup, not a write.
func exists(ct *container, r *netlink.Route) bool {
	rs, err := dump(func() ([]netlink.Route, error) {
		return ct.h.RouteListFiltered(r.Family, &netlink.Route{Dst: r.Dst, Protocol: RouteProtocol},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return false
	}
	for _, x := range rs {
		if x.LinkIndex == r.LinkIndex && x.Gw.Equal(r.Gw) {
			return true
		}
	}
	return false
}

// pruneContainerRoutes removes the container routes vzd made that the
// current spec no longer wants (a removed gateway, a moved default).
func (a *Actuator) pruneContainerRoutes(ct *container, p *plan) error {
	rs, err := dump(func() ([]netlink.Route, error) {
		return ct.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		gw, _ := netip.AddrFromSlice(r.Gw)
		if p.wantRoutes[routeKey{r.LinkIndex, gw.Unmap()}] {
			continue
		}
		if err := ct.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

// removeEnd deletes a host end (its container end goes with it, and the
// kernel drops its routes and neighbours) and the proxy entries of the
// addresses routed through it.
func (a *Actuator) removeEnd(end netlink.Link) error {
	var errs []error
	if a.cfg.Uplink != "" {
		routes, err := dump(func() ([]netlink.Route, error) {
			return a.h.RouteListFiltered(netlink.FAMILY_ALL,
				&netlink.Route{LinkIndex: end.Attrs().Index, Protocol: RouteProtocol},
				netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("routes via %s: %w", end.Attrs().Name, err))
		}
		for _, r := range routes {
			if dst, ok := fromIPNet(r.Dst); ok {
				if err := a.delProxy(dst.Addr()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := a.h.LinkDel(end); err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("delete %s: %w", end.Attrs().Name, err))
	}
	return errors.Join(errs...)
}

// Remove deletes every host end of c (found by alias, so also ends c no
// longer names), the routes through them and the proxy entries of c's
// routed addresses, which outlive the veth when the container's namespace
// is already gone. Removing what is absent returns nil.
func (a *Actuator) Remove(ctx context.Context, c *spec.Container) error {
	ends, err := a.hostEnds(c)
	if err != nil {
		return fmt.Errorf("network of %s: %w", c.ID, err)
	}
	var errs []error
	for ifname, l := range ends {
		if err := a.removeEnd(l); err != nil {
			errs = append(errs, fmt.Errorf("interface %s of %s: %w", ifname, c.ID, err))
			continue
		}
		a.log.Info("interface removed", "container", c.ID, "interface", ifname, "host_end", l.Attrs().Name)
	}
	if a.cfg.Uplink == "" {
		return errors.Join(errs...)
	}
	// Addresses still routed to a host end (another container's, after
	// an address moved) keep their proxy entries.
	routed := map[netip.Addr]bool{}
	if rs, err := dump(func() ([]netlink.Route, error) {
		return a.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	}); err == nil {
		for _, r := range rs {
			if dst, ok := fromIPNet(r.Dst); ok {
				routed[dst.Addr()] = true
			}
		}
	}
	for _, ifc := range c.Network.Interfaces {
		if !ifc.Routed() {
			continue
		}
		for _, pr := range ifc.IPs {
			if routed[pr.Addr()] {
				continue
			}
			if err := a.delProxy(pr.Addr()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Observe reports c's interfaces as they exist: the host ends found by
// alias and, when pid > 0, their container ends. With pid 0 it lists every
// link of the node to find them.
func (a *Actuator) Observe(ctx context.Context, c *spec.Container, pid int) (State, error) {
	var ct *container
	var ends map[string]netlink.Link
	var err error
	if pid > 0 {
		if ct, err = openContainer(pid); err != nil {
			return State{}, fmt.Errorf("network of %s: %w", c.ID, err)
		}
		defer ct.close()
		ends, err = a.endsOf(c, hostIfNames(a.cfg.Prefix, c), ct)
	} else {
		ends, err = a.hostEnds(c)
	}
	if err != nil {
		return State{}, fmt.Errorf("network of %s: %w", c.ID, err)
	}
	var st State
	for ifname, end := range ends {
		ea := end.Attrs()
		l := Link{Name: ifname, HostName: ea.Name, HostIndex: ea.Index, MTU: ea.MTU}
		if ea.MasterIndex != 0 {
			if m, err := a.h.LinkByIndex(ea.MasterIndex); err == nil {
				l.Bridge = m.Attrs().Name
			}
		}
		routes, err := dump(func() ([]netlink.Route, error) {
			return a.h.RouteListFiltered(netlink.FAMILY_ALL,
				&netlink.Route{LinkIndex: ea.Index, Protocol: RouteProtocol},
				netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return State{}, fmt.Errorf("routes via %s: %w", ea.Name, err)
		}
		for _, r := range routes {
			if dst, ok := fromIPNet(r.Dst); ok {
				l.Routes = append(l.Routes, dst)
			}
		}
		if ct != nil {
			if peer := a.peerOf(end, ifname, ct); peer != nil {
				l.MAC = peer.Attrs().HardwareAddr
				addrs, err := dump(func() ([]netlink.Addr, error) { return ct.h.AddrList(peer, netlink.FAMILY_ALL) })
				if err != nil {
					return State{}, fmt.Errorf("addresses of %s: %w", ifname, err)
				}
				for _, ad := range addrs {
					if p, ok := fromIPNet(ad.IPNet); ok && !(p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
						l.Addrs = append(l.Addrs, p)
					}
				}
			}
		}
		st.Interfaces = append(st.Interfaces, l)
	}
	slices.SortFunc(st.Interfaces, func(x, y Link) int { return cmpString(x.Name, y.Name) })
	return st, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// WriteFiles writes /etc/resolv.conf (when c says anything about DNS),
// /etc/hostname and /etc/hosts (when c has a hostname) inside c.Root,
// through safefile, so a link the container planted is replaced, never
// followed. A file is written only when its content differs.
func (a *Actuator) WriteFiles(ctx context.Context, c *spec.Container) error {
	if c.Root == "" {
		return fmt.Errorf("files of %s: no root", c.ID)
	}
	root, err := safefile.Open(c.Root)
	if err != nil {
		return fmt.Errorf("files of %s: %w", c.ID, err)
	}
	defer root.Close()
	var errs []error
	update := func(name string, data []byte) {
		wrote, err := root.UpdateFile(name, data, 0o644)
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s of %s: %w", name, c.ID, err))
		} else if wrote {
			a.log.Info("file written", "container", c.ID, "path", name)
		}
	}
	var hostConf []byte
	if c.Network.NameserverInherit {
		src := a.cfg.ResolvConf
		if src == "" {
			src = DefaultResolvConf
		}
		if hostConf, err = os.ReadFile(src); err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", src, err))
		}
	}
	if data, ok := resolvConf(&c.Network, hostConf); ok {
		update("/etc/resolv.conf", data)
	}
	if c.Hostname != "" {
		update("/etc/hostname", hostnameFile(c.Hostname))
		old, err := root.ReadFile("/etc/hosts")
		if err != nil {
			old = nil
		}
		update("/etc/hosts", hostsFile(old, c.Hostname, firstAddr(c)))
	}
	return errors.Join(errs...)
}
