// Package network converges a container's network: veth pairs whose
// container end lives in the container's network namespace, routed
// (venet-style host routes with proxy ARP/NDP) or bridged host ends,
// addresses, routes, MTU, MAC and the hostname, all through netlink and
// applied live; and the files a container's resolver reads (resolv.conf,
// hostname, hosts), written without following links the container planted.
//
// Routed interfaces (no bridge), the Virtuozzo IP_ADDRESS style:
//
//	container                         host namespace (Config.HostNS)
//	eth0 10.0.0.2/24 noprefixroute ── vzXXXXXXXX.0 169.254.0.1/32, fe80::1/64
//	default via 169.254.0.1 onlink     10.0.0.2/32 dev vzXXXXXXXX.0 proto 118
//	default via fe80::1                proxy_arp=1 on the host end
//	                                   proxy ARP/NDP entry for 10.0.0.2 on Config.Uplink
//
// Every host end carries the same link-local gateway (169.254.0.1 and
// fe80::1, as the CNI ptp plugin does; Calico uses a fixed 169.254.1.1 the
// same way), so a container's default route never depends on the node's
// addressing, and the container's addresses have no prefix route inside
// it: all its traffic goes to the host, which routes it (forwarding is
// enabled in the host namespace).
//
// Bridged interfaces: the host end is enslaved to the named bridge, the
// container gets its addresses with their prefixes and its default route
// via the spec's gateways.
//
// Host ends are named Prefix + 8 hex of sha1(container ID) + "." + number
// (HostIfName) unless the spec names them, and carry the alias
// "vzd:<container ID>:<interface>", which is how an agent restart finds
// them again instead of recreating them.
//
// # What an operator configures on a real node
//
// vzd itself sets, in the host namespace: net.ipv4.ip_forward=1 and
// net.ipv6.conf.all.forwarding=1 once a routed interface needs them,
// proxy_arp=1 on each routed host end, proxy_ndp=1 on Config.Uplink, and one
// proxy ARP/NDP entry per routed address on Config.Uplink (per address,
// like vzctl, rather than proxy_arp=1 on the uplink, which would answer for
// every address the node can route). The operator:
//
//   - names the uplink (the interface on the network the containers'
//     addresses come from) in the agent's configuration, or routes the
//     containers' addresses to the node on the network's router instead;
//   - keeps IPv6 enabled on new interfaces (net.ipv6.conf.default.disable_ipv6=0)
//     when containers have IPv6 addresses;
//   - allows forwarding between the uplink and the host ends ("vz*") in the
//     node's firewall, and keeps rp_filter at 0 or 2 (loose) on them;
//   - creates the bridges named by bridged interfaces (vzd enslaves host ends
//     to them but never creates or configures a bridge);
//   - keeps 169.254.0.1 and fe80::1 free on the node: every routed host end
//     carries them;
//   - knows that enabling forwarding makes Linux ignore router
//     advertisements on the uplink unless accept_ra=2 there.
//
// A routed interface with a spec gateway uses that gateway (on-link) as
// its default next hop instead of 169.254.0.1; the host end answers ARP for
// it through proxy_arp when the node has a route to it.
//
// Proxy entries of an address removed from the spec while the container
// was stopped are not found again (nothing ties them to the container
// then); Remove deletes those of the addresses the spec still names.
package network

import (
	"crypto/sha1"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"vzd/spec"
)

// Config configures an Actuator.
type Config struct {
	// HostNS is the path of the network namespace the host ends, bridges
	// and routes live in (e.g. /run/netns/node). Empty means the
	// namespace the process is in. Tests point it at a namespace they
	// made, so the real host namespace is never touched.
	HostNS string
	// Prefix starts every derived host end name; default "vz". Keep it
	// short: names are at most 15 bytes.
	Prefix string
	// Uplink is the node's interface on the network the routed containers'
	// addresses belong to. When set, vzd adds a proxy ARP (IPv4) or proxy
	// NDP (IPv6) entry on it for each routed address, so the node answers
	// for its containers on that network. Empty: no proxy entries; the
	// network must route the containers' addresses to the node.
	Uplink string
	// ResolvConf is the node's resolver file, which NameserverInherit
	// copies; default /etc/resolv.conf.
	ResolvConf string
	// Log receives what the actuator changes; default slog.Default().
	Log *slog.Logger
}

// DefaultResolvConf is the node file NameserverInherit copies by default.
const DefaultResolvConf = "/etc/resolv.conf"

// DefaultPrefix starts derived host end names.
const DefaultPrefix = "vz"

// aliasPrefix marks host ends as vzd's: "vzd:<container ID>:<interface>".
// Changing it makes vzd lose track of existing host ends.
const aliasPrefix = "vzd:"

// Gateway addresses of routed interfaces: every routed host end carries
// them, and the container's default routes point at them. Changing them
// breaks running containers' default routes until their next Apply.
var (
	Gateway4 = netip.MustParseAddr("169.254.0.1")
	Gateway6 = netip.MustParseAddr("fe80::1")
)

// maxIfName is IFNAMSIZ minus the terminating NUL.
const maxIfName = 15

// HostIfName returns the derived name of the host end of a container's
// interface number index: prefix + hex of sha1(containerID) + "." +
// index, the hash cut to fit 15 bytes (at most 8 hex digits).
func HostIfName(prefix, containerID string, index int) string {
	sum := sha1.Sum([]byte(containerID))
	h := hex.EncodeToString(sum[:])
	suffix := "." + strconv.Itoa(index)
	n := min(8, maxIfName-len(prefix)-len(suffix))
	if n < 1 {
		// A prefix too long for the scheme: keep the suffix, cut the prefix.
		prefix = prefix[:maxIfName-len(suffix)-1]
		n = 1
	}
	return prefix + h[:n] + suffix
}

// MAC returns the derived MAC address of a container's interface: six
// bytes of sha1(containerID "/" ifname), marked locally administered and
// unicast.
func MAC(containerID, ifname string) net.HardwareAddr {
	sum := sha1.Sum([]byte(containerID + "/" + ifname))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// hostMAC returns the MAC address of a host end: derived like MAC, with
// the first byte 0xfe, so that a bridge, which takes the lowest MAC of its
// ports unless one is set, never takes a container's host end's (libvirt
// does the same for its tap devices).
func hostMAC(containerID, ifname string) net.HardwareAddr {
	mac := MAC(containerID, ifname+"@host")
	mac[0] = 0xfe
	return mac
}

// ifNumbers gives every interface the number its host end name carries:
// the number its name ends with ("eth3" → 3), so that adding or removing
// another interface never renames it; names without one, or whose number
// is taken or above 99, get the lowest free number.
func ifNumbers(ifs []spec.Interface) []int {
	nums := make([]int, len(ifs))
	used := map[int]bool{}
	for i, ifc := range ifs {
		nums[i] = -1
		name := ifc.Name
		j := len(name)
		for j > 0 && name[j-1] >= '0' && name[j-1] <= '9' {
			j--
		}
		if j == len(name) || len(name)-j > 2 {
			continue
		}
		n, _ := strconv.Atoi(name[j:])
		if !used[n] {
			nums[i], used[n] = n, true
		}
	}
	for i := range nums {
		if nums[i] >= 0 {
			continue
		}
		n := 0
		for used[n] {
			n++
		}
		nums[i], used[n] = n, true
	}
	return nums
}

// hostIfNames returns the host end name of each of c's interfaces.
func hostIfNames(prefix string, c *spec.Container) []string {
	nums := ifNumbers(c.Network.Interfaces)
	names := make([]string, len(nums))
	for i, ifc := range c.Network.Interfaces {
		if ifc.HostName != "" {
			names[i] = ifc.HostName
		} else {
			names[i] = HostIfName(prefix, c.ID, nums[i])
		}
	}
	return names
}

func alias(containerID, ifname string) string {
	return aliasPrefix + containerID + ":" + ifname
}

// parseAlias returns the container ID and interface of a vzd host end
// alias. Container IDs never hold ":" (file names and UUIDs), interface
// names never do either, so the last ":" splits them.
func parseAlias(s string) (id, ifname string, ok bool) {
	rest, ok := strings.CutPrefix(s, aliasPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// State is what exists of a container's network now.
type State struct {
	Interfaces []Link
}

// Link is one interface of a container as observed.
type Link struct {
	Name      string           // inside the container
	HostName  string           // host end
	HostIndex int              // host end's ifindex in the host namespace
	Bridge    string           // master of the host end; "" = routed
	MTU       int              // host end's MTU
	MAC       net.HardwareAddr // container end's; nil when pid was 0 or the end is missing
	Addrs     []netip.Prefix   // container end's addresses, link-local IPv6 excluded
	Routes    []netip.Prefix   // host routes vzd made to the container through this end
}
