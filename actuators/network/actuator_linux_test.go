package network

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"vzd/internal/testutil"
	"vzd/spec"
)

// node is a network namespace standing in for the host: the actuator's
// host ends, bridges, routes and sysctls all go there, never into the
// real host namespace. It has an "uplink" with 10.99.0.1/24 and no
// route out.
type node struct {
	name string
	path string
	h    *netlink.Handle
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "busybox")
	testutil.RequireTool(t, "nsenter")
	testutil.RequireTool(t, "unshare")
	name := testutil.UniqueName("vzdt")
	// netns.NewNamed moves the calling thread into the new namespace:
	// do it on a locked thread and move back.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n := &node{name: name, path: "/var/run/netns/" + name}
	ns, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if n.h, err = netlink.NewHandleAt(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.h.Close)
	lo, _ := n.h.LinkByName("lo")
	must(t, n.h.LinkSetUp(lo))
	// A bridge stands in for the uplink (no dummy module here).
	up := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	up.Name = "uplink"
	must(t, n.h.LinkAdd(up))
	must(t, n.h.AddrAdd(up, addr("10.99.0.1/24")))
	must(t, n.h.LinkSetUp(up))
	return n
}

func (n *node) bridge(t *testing.T, name string) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = name
	must(t, n.h.LinkAdd(br))
	must(t, n.h.LinkSetUp(br))
}

func (n *node) actuator(t *testing.T) *Actuator {
	t.Helper()
	a, err := New(Config{HostNS: n.path, Prefix: "vzt", Uplink: "uplink", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// ping runs busybox ping (one echo, one second) in the namespaces of ns
// ("--net=PATH" or "-t PID -n") and retries twice, since the first echo
// may race neighbour resolution.
func ping(t *testing.T, nsArgs []string, dst string) bool {
	t.Helper()
	for range 3 {
		args := append(append([]string{}, nsArgs...), "busybox", "ping", "-c", "1", "-W", "1", dst)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec.CommandContext(ctx, "nsenter", args...).Run()
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

func inPid(pid int) []string { return []string{"-t", fmt.Sprint(pid), "-n"} }

func (n *node) in() []string { return []string{"--net=" + n.path} }

// startContainer starts a process in new network and UTS namespaces, the
// stand-in for a container's init, and returns its pid.
func startContainer(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "--uts", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	self, _ := os.Readlink("/proc/self/ns/net")
	for range 500 {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && l != self {
			return cmd.Process.Pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("container process did not enter its namespaces")
	return 0
}

func ctSpec(id string, ifs ...spec.Interface) *spec.Container {
	return &spec.Container{ID: id, Network: spec.Network{Interfaces: ifs}}
}

func routed(name string, ips ...string) spec.Interface {
	ifc := spec.Interface{Name: name}
	for _, ip := range ips {
		ifc.IPs = append(ifc.IPs, netip.MustParsePrefix(ip))
	}
	return ifc
}

func apply(t *testing.T, a *Actuator, c *spec.Container, pid int) {
	t.Helper()
	needs, err := a.Apply(context.Background(), c, pid)
	if err != nil {
		t.Fatalf("Apply %s: %v", c.ID, err)
	}
	if len(needs) > 0 {
		t.Fatalf("Apply %s needs restart: %v", c.ID, needs)
	}
}

func TestRoutedContainers(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	idA, idB := testutil.UniqueName("cta"), testutil.UniqueName("ctb")
	ca := ctSpec(idA, routed("eth0", "10.70.0.2/24", "fd00:70::2/64"))
	cb := ctSpec(idB, routed("eth0", "10.70.0.3/24", "fd00:70::3/64"))
	pa, pb := startContainer(t), startContainer(t)
	apply(t, a, ca, pa)
	apply(t, a, cb, pb)
	apply(t, a, ca, pa) // idempotent

	for _, dst := range []string{"10.70.0.3", "fd00:70::3", "169.254.0.1", "10.99.0.1"} {
		if !ping(t, inPid(pa), dst) {
			t.Errorf("container A cannot reach %s", dst)
		}
	}
	for _, dst := range []string{"10.70.0.2", "fd00:70::2"} {
		if !ping(t, n.in(), dst) {
			t.Errorf("node cannot reach %s", dst)
		}
	}
	up, _ := n.h.LinkByName("uplink")
	proxies := func() int {
		c := 0
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			ns, err := n.h.NeighProxyList(up.Attrs().Index, fam)
			if err != nil {
				t.Fatal(err)
			}
			c += len(ns)
		}
		return c
	}
	if got := proxies(); got != 4 {
		t.Errorf("proxy entries on uplink: %d, want 4", got)
	}

	must(t, a.Remove(context.Background(), ca))
	must(t, a.Remove(context.Background(), ca)) // absent: nil
	if _, err := n.h.LinkByName(HostIfName("vzt", idA, 0)); err == nil {
		t.Error("host end of A left after Remove")
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	must(t, err)
	if len(rs) != 2 {
		t.Errorf("routes after removing A: %v, want B's two", rs)
	}
	if got := proxies(); got != 2 {
		t.Errorf("proxy entries after removing A: %d, want 2", got)
	}
	neighs, err := n.h.NeighList(0, netlink.FAMILY_ALL)
	must(t, err)
	for _, ne := range neighs {
		if ne.IP.Equal(net.ParseIP("10.70.0.2")) || ne.IP.Equal(net.ParseIP("fd00:70::2")) {
			t.Errorf("neighbour entry left after Remove: %v", ne)
		}
	}
	if ping(t, inPid(pb), "10.70.0.2") {
		t.Error("removed container still answers")
	}
}

// TestProxyOnUplink puts a neighbour on the node's network (a namespace
// plugged into the uplink) and a routed container with an address of that
// network: the neighbour reaches it only if the node answers ARP and NDP
// for it on the uplink.
func TestProxyOnUplink(t *testing.T) {
	n := newNode(t)
	up, err := n.h.LinkByName("uplink")
	must(t, err)
	must(t, n.h.AddrAdd(up, addr("fd00:99::1/64")))
	lan := startContainer(t)
	lanNS, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", lan))
	must(t, err)
	defer lanNS.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = testutil.UniqueName("lan")
	attrs.MasterIndex = up.Attrs().Index
	must(t, n.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(lanNS)}))
	must(t, n.h.LinkSetUp(&netlink.Veth{LinkAttrs: attrs}))
	lh, err := netlink.NewHandleAt(lanNS)
	must(t, err)
	defer lh.Close()
	eth0, err := lh.LinkByName("eth0")
	must(t, err)
	must(t, lh.AddrAdd(eth0, addr("10.99.0.50/24")))
	nodad := addr("fd00:99::50/64")
	nodad.Flags = 0x02 // IFA_F_NODAD
	must(t, lh.AddrAdd(eth0, nodad))
	must(t, lh.LinkSetUp(eth0))

	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.99.0.20/24", "fd00:99::20/64"))
	apply(t, a, c, startContainer(t))
	for _, dst := range []string{"10.99.0.20", "fd00:99::20"} {
		if !ping(t, inPid(lan), dst) {
			t.Errorf("neighbour on the uplink cannot reach %s", dst)
		}
	}
}

func TestBridgedContainers(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	// Apply before the bridge exists fails, and succeeds once it does.
	early := ifcBridged("eth0", "10.71.0.9/24")
	pe := startContainer(t)
	ce := ctSpec(testutil.UniqueName("ct"), early)
	if _, err := a.Apply(context.Background(), ce, pe); err == nil {
		t.Fatal("Apply with a missing bridge succeeded")
	}
	n.bridge(t, "br0")
	apply(t, a, ce, pe)
	mk := func(ip string) (*spec.Container, int) {
		ifc := routed("eth0", ip)
		ifc.Bridge = "br0"
		ifc.Gateway = netip.MustParseAddr("10.71.0.1")
		ifc.MTU = 1400
		c := ctSpec(testutil.UniqueName("ct"), ifc)
		pid := startContainer(t)
		apply(t, a, c, pid)
		return c, pid
	}
	ca, pa := mk("10.71.0.2/24")
	_, _ = mk("10.71.0.3/24")
	if !ping(t, inPid(pa), "10.71.0.9") {
		t.Error("container applied after a failed Apply unreachable")
	}
	if !ping(t, inPid(pa), "10.71.0.3") {
		t.Fatal("bridged containers cannot reach each other")
	}
	st, err := a.Observe(context.Background(), ca, pa)
	must(t, err)
	if len(st.Interfaces) != 1 || st.Interfaces[0].Bridge != "br0" || st.Interfaces[0].MTU != 1400 ||
		st.Interfaces[0].MAC.String() != MAC(ca.ID, "eth0").String() || len(st.Interfaces[0].Routes) != 0 {
		t.Fatalf("Observe = %+v", st)
	}
	if hl, err := n.h.LinkByIndex(st.Interfaces[0].HostIndex); err != nil || hl.Attrs().HardwareAddr.String() != hostMAC(ca.ID, "eth0").String() {
		t.Errorf("host end MAC: %v %v", hl, err)
	}
}

func ifcBridged(name, ip string) spec.Interface {
	ifc := routed(name, ip)
	ifc.Bridge = "br0"
	return ifc
}

// TestNewNamespaceReplacesPair: the container restarted (a new network
// namespace) while its old namespace lingers; the old pair is replaced.
// Also switches the interface from routed to bridged and changes its MTU,
// live.
func TestNewNamespaceReplacesPair(t *testing.T) {
	n := newNode(t)
	n.bridge(t, "br0")
	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.77.0.2/24"))
	p1 := startContainer(t)
	apply(t, a, c, p1)
	p2 := startContainer(t)
	apply(t, a, c, p2)
	if !ping(t, n.in(), "10.77.0.2") {
		t.Fatal("container in its new namespace unreachable")
	}
	st, err := a.Observe(context.Background(), c, p2)
	must(t, err)
	if len(st.Interfaces) != 1 || len(st.Interfaces[0].Addrs) != 1 {
		t.Fatalf("Observe = %+v", st)
	}
	links, _ := n.h.LinkList()
	ends := 0
	for _, l := range links {
		if _, _, ok := parseAlias(l.Attrs().Alias); ok {
			ends++
		}
	}
	if ends != 1 {
		t.Fatalf("%d host ends, want 1", ends)
	}

	c.Network.Interfaces[0].Bridge = "br0"
	c.Network.Interfaces[0].MTU = 1280
	apply(t, a, c, p2)
	st2, err := a.Observe(context.Background(), c, p2)
	must(t, err)
	l := st2.Interfaces[0]
	if l.HostIndex != st.Interfaces[0].HostIndex || l.Bridge != "br0" || l.MTU != 1280 || len(l.Routes) != 0 {
		t.Fatalf("after switching to bridged: %+v", l)
	}
}

func TestLiveChanges(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	ca := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.72.0.2/24"))
	ca.Hostname = "one"
	cb := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.72.0.3/24"))
	pa, pb := startContainer(t), startContainer(t)
	apply(t, a, ca, pa)
	apply(t, a, cb, pb)
	if !ping(t, inPid(pb), "10.72.0.2") {
		t.Fatal("no reachability before the change")
	}
	hostname := func() string {
		out, err := exec.Command("nsenter", "-t", fmt.Sprint(pa), "-u", "busybox", "hostname").Output()
		must(t, err)
		return strings.TrimSpace(string(out))
	}
	if h := hostname(); h != "one" {
		t.Fatalf("hostname %q, want one", h)
	}

	// Swap the address and the hostname, and add an interface, live.
	ca.Network.Interfaces[0].IPs = []netip.Prefix{netip.MustParsePrefix("10.72.0.4/24")}
	ca.Hostname = "two.example.com"
	ca.Network.Interfaces = append(ca.Network.Interfaces, routed("eth1", "10.73.0.2/32"))
	st0, _ := a.Observe(context.Background(), ca, pa)
	apply(t, a, ca, pa)
	if !ping(t, inPid(pb), "10.72.0.4") {
		t.Error("address added live does not answer")
	}
	if ping(t, inPid(pb), "10.72.0.2") {
		t.Error("address removed live still answers")
	}
	if !ping(t, inPid(pb), "10.73.0.2") {
		t.Error("interface added live does not answer")
	}
	if h := hostname(); h != "two.example.com" {
		t.Errorf("hostname %q after live change", h)
	}
	st1, _ := a.Observe(context.Background(), ca, pa)
	if len(st1.Interfaces) != 2 || st1.Interfaces[0].HostIndex != st0.Interfaces[0].HostIndex {
		t.Errorf("eth0 recreated or eth1 missing: before %+v after %+v", st0, st1)
	}

	// Remove the interface again.
	ca.Network.Interfaces = ca.Network.Interfaces[:1]
	apply(t, a, ca, pa)
	if ping(t, inPid(pb), "10.73.0.2") {
		t.Error("interface removed live still answers")
	}
	if _, err := n.h.LinkByName(HostIfName("vzt", ca.ID, 1)); err == nil {
		t.Error("host end of removed interface left")
	}

	// Rename the interface: its address moves to the new one in one pass.
	ca.Network.Interfaces[0].Name = "eth5"
	apply(t, a, ca, pa)
	if !ping(t, inPid(pb), "10.72.0.4") {
		t.Error("address unreachable after moving to a renamed interface")
	}
	if _, err := n.h.LinkByName(HostIfName("vzt", ca.ID, 0)); err == nil {
		t.Error("host end of the old interface left")
	}
}

func TestRestartFindsInterfaces(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.74.0.2/24"), routed("eth3", "fd00:74::2/64"))
	pid := startContainer(t)
	apply(t, a, c, pid)
	before, err := a.Observe(context.Background(), c, pid)
	must(t, err)
	a.Close()

	b := n.actuator(t) // the agent restarted
	apply(t, b, c, pid)
	after, err := b.Observe(context.Background(), c, pid)
	must(t, err)
	if len(after.Interfaces) != 2 {
		t.Fatalf("Observe after restart: %+v", after)
	}
	for i := range before.Interfaces {
		x, y := before.Interfaces[i], after.Interfaces[i]
		if x.HostIndex != y.HostIndex || x.HostName != y.HostName {
			t.Errorf("interface %s recreated: %+v -> %+v", x.Name, x, y)
		}
	}
	if after.Interfaces[1].HostName != HostIfName("vzt", c.ID, 3) {
		t.Errorf("eth3 host end %s", after.Interfaces[1].HostName)
	}
}

// An agent killed between creating a pair and setting its alias (the
// kernel ignores the alias in the creating request) left a host end with
// vzd's name and MAC but no alias: the next agent takes it as the
// container's, names it and goes on, and removal finds it too.
func TestEndWithoutAliasAdopted(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.73.0.2/24"))
	pid := startContainer(t)
	apply(t, a, c, pid)
	before, err := a.Observe(context.Background(), c, pid)
	must(t, err)
	end, err := n.h.LinkByName(before.Interfaces[0].HostName)
	must(t, err)
	// What the killed agent left: the alias cleared.
	must(t, n.h.LinkSetAlias(end, ""))

	b := n.actuator(t)
	apply(t, b, c, pid)
	after, err := b.Observe(context.Background(), c, pid)
	must(t, err)
	if len(after.Interfaces) != 1 || after.Interfaces[0].HostIndex != before.Interfaces[0].HostIndex {
		t.Fatalf("end without alias not adopted: %+v -> %+v", before.Interfaces, after.Interfaces)
	}
	end, err = n.h.LinkByIndex(after.Interfaces[0].HostIndex)
	must(t, err)
	if got := end.Attrs().Alias; got != alias(c.ID, "eth0") {
		t.Fatalf("alias after apply %q", got)
	}
	if !ping(t, n.in(), "10.73.0.2") {
		t.Fatal("container unreachable after adoption")
	}

	// Removal finds an aliasless end by its MAC as well.
	must(t, n.h.LinkSetAlias(end, ""))
	must(t, b.Remove(context.Background(), c))
	if _, err := n.h.LinkByIndex(end.Attrs().Index); err == nil {
		t.Fatal("end without alias survived Remove")
	}

	// A link with vzd's name but another MAC and no alias is not
	// taken as the container's: creation fails rather than delete it.
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: before.Interfaces[0].HostName}, PeerName: testutil.UniqueName("p")}
	must(t, n.h.LinkAdd(other))
	defer n.h.LinkDel(other)
	if _, err := b.Apply(context.Background(), c, pid); err == nil {
		t.Fatal("Apply took over a foreign link with the host end's name")
	}
	if _, err := n.h.LinkByName(before.Interfaces[0].HostName); err != nil {
		t.Fatalf("foreign link removed: %v", err)
	}
}

func TestFifteenInterfaces(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"))
	for i := range spec.MaxInterfaces {
		c.Network.Interfaces = append(c.Network.Interfaces, routed(fmt.Sprintf("eth%d", i), fmt.Sprintf("10.75.%d.2/24", i)))
	}
	pid := startContainer(t)
	apply(t, a, c, pid)
	st, err := a.Observe(context.Background(), c, pid)
	must(t, err)
	if len(st.Interfaces) != spec.MaxInterfaces {
		t.Fatalf("%d interfaces observed", len(st.Interfaces))
	}
	if !ping(t, n.in(), "10.75.14.2") {
		t.Error("last interface unreachable")
	}
	must(t, a.Remove(context.Background(), c))
	links, _ := n.h.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "vzt") {
			t.Errorf("left behind: %s", l.Attrs().Name)
		}
	}
}

func TestAddressOnNodeReported(t *testing.T) {
	n := newNode(t)
	a := n.actuator(t)
	c := ctSpec(testutil.UniqueName("ct"), routed("eth0", "10.99.0.1/24"))
	_, err := a.Apply(context.Background(), c, startContainer(t))
	if err == nil || !strings.Contains(err.Error(), "already on the node") {
		t.Fatalf("Apply = %v, want address already on the node", err)
	}
	rs, _ := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if len(rs) != 0 {
		t.Fatalf("node address routed to the container: %v", rs)
	}
}

func TestWriteFilesPlantedLinks(t *testing.T) {
	testutil.RequireRoot(t)
	top := t.TempDir()
	root := filepath.Join(top, "root")
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	secret := filepath.Join(top, "shadow")
	must(t, os.WriteFile(secret, []byte("root:x:0:\n"), 0o600))
	for _, f := range []string{"resolv.conf", "hostname", "hosts"} {
		must(t, os.Symlink(secret, filepath.Join(root, "etc", f)))
	}
	hostConf := filepath.Join(top, "host-resolv.conf")
	must(t, os.WriteFile(hostConf, []byte("nameserver 127.0.0.53\nnameserver 198.51.100.1\n"), 0o644))
	a := &Actuator{log: testLogger(t), cfg: Config{ResolvConf: hostConf}}
	c := ctSpec("ct1", routed("eth0", "10.76.0.2/24"))
	c.Root, c.Hostname = root, "ct1.example.com"
	c.Network.Nameservers = []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	c.Network.NameserverInherit = true
	must(t, a.WriteFiles(context.Background(), c))
	if b, _ := os.ReadFile(secret); string(b) != "root:x:0:\n" {
		t.Fatalf("host file overwritten: %q", b)
	}
	want := map[string]string{
		"resolv.conf": "nameserver 198.51.100.1\nnameserver 192.0.2.53\n",
		"hostname":    "ct1.example.com\n",
		"hosts":       "10.76.0.2\tct1.example.com ct1 # vzd\n",
	}
	files := []string{"resolv.conf", "hostname", "hosts"}
	var inodes []uint64
	for _, f := range files {
		w := want[f]
		p := filepath.Join(root, "etc", f)
		st, err := os.Lstat(p)
		must(t, err)
		b, _ := os.ReadFile(p)
		if !st.Mode().IsRegular() || !bytes.Contains(b, []byte(w)) {
			t.Errorf("%s: mode %v content %q", f, st.Mode(), b)
		}
		inodes = append(inodes, ino(t, p))
	}
	// A second pass changes nothing: no file is rewritten.
	must(t, a.WriteFiles(context.Background(), c))
	for i, f := range files {
		if ino(t, filepath.Join(root, "etc", f)) != inodes[i] {
			t.Errorf("%s rewritten without a change", f)
		}
	}
	// A nameserver and the hostname changed on a running container.
	c.Network.Nameservers = []netip.Addr{netip.MustParseAddr("2001:db8::53")}
	c.Hostname = "ct2"
	must(t, a.WriteFiles(context.Background(), c))
	for f, w := range map[string]string{"resolv.conf": "nameserver 2001:db8::53\n", "hostname": "ct2\n", "hosts": "10.76.0.2\tct2 # vzd\n"} {
		b, _ := os.ReadFile(filepath.Join(root, "etc", f))
		if !bytes.Contains(b, []byte(w)) {
			t.Errorf("%s after change: %q", f, b)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hosts")); bytes.Contains(b, []byte("ct1")) {
		t.Errorf("old hostname left in hosts: %q", b)
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	must(t, err)
	return st.Sys().(*syscall.Stat_t).Ino
}

func addr(s string) *netlink.Addr {
	p := netip.MustParsePrefix(s)
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLoggerQuiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
