package network

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"vzd/internal/testutil"
	"vzd/spec"
)

// TestBenchNetwork measures one container's network setup with the
// actuator and with the ip tool, in the same run and the same throwaway
// namespace, and writes a Markdown table to $VZD_BENCH_NETWORK_OUT.
// scripts/bench-network.sh runs it; without the variable it is skipped.
func TestBenchNetwork(t *testing.T) {
	out := os.Getenv("VZD_BENCH_NETWORK_OUT")
	if out == "" {
		t.Skip("benchmark: set VZD_BENCH_NETWORK_OUT (scripts/bench-network.sh)")
	}
	testutil.RequireTool(t, "ip")
	runs := 50
	n := newNode(t)
	a := n.actuator(t)
	a.log = testLoggerQuiet()

	spec1 := func(i int) *spec.Container {
		return ctSpec(fmt.Sprintf("bench%d", i), routed("eth0",
			fmt.Sprintf("10.80.%d.%d/24", i/200, i%200+2), fmt.Sprintf("fd00:80::%x/64", i+2)))
	}
	var rows []string
	row := func(what, cmd string, d []time.Duration, ref time.Duration) time.Duration {
		m := median(d)
		ratio := ""
		if ref > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(m)/float64(ref))
		}
		rows = append(rows, fmt.Sprintf("| %s | `%s` | %d | %s | %s |", what, cmd, len(d), ms(m), ratio))
		return m
	}

	// One container: veth, addresses inside, gateway addresses, host
	// routes, proxy entries, sysctls, default routes.
	var vz, ipSteps, ipBatch []time.Duration
	for i := range runs {
		c := spec1(i)
		pid, stop := startProc(t)
		t0 := time.Now()
		if _, err := a.Apply(context.Background(), c, pid); err != nil {
			t.Fatal(err)
		}
		vz = append(vz, time.Since(t0))
		must(t, a.Remove(context.Background(), c))
		stop()
	}
	for _, batch := range []bool{false, true} {
		for i := range runs {
			c := spec1(i)
			pid, stop := startProc(t)
			t0 := time.Now()
			ipSetup(t, n, c, pid, batch)
			d := time.Since(t0)
			if batch {
				ipBatch = append(ipBatch, d)
			} else {
				ipSteps = append(ipSteps, d)
			}
			ipTeardown(t, n, c)
			stop()
		}
	}
	ref := row("vzd Apply, one routed container (IPv4+IPv6)", "go test -run TestBenchNetwork ./actuators/network", vz, 0)
	row("ip tool, one command per step", "ip -n NODE …; nsenter -t PID -n ip …; ip netns exec NODE sysctl -w …", ipSteps, ref)
	row("ip tool, two batches", "ip -n NODE -batch -; nsenter -t PID -n ip -batch -; ip netns exec NODE sysctl -w …", ipBatch, ref)

	// 100 containers, set up one after the other, then a converged pass.
	const many = 100
	var pids []int
	for range many {
		pid, stop := startProc(t)
		t.Cleanup(stop)
		pids = append(pids, pid)
	}
	t0 := time.Now()
	for i, pid := range pids {
		if _, err := a.Apply(context.Background(), spec1(1000+i), pid); err != nil {
			t.Fatal(err)
		}
	}
	setup := time.Since(t0)
	t0 = time.Now()
	for i, pid := range pids {
		if _, err := a.Apply(context.Background(), spec1(1000+i), pid); err != nil {
			t.Fatal(err)
		}
	}
	again := time.Since(t0)
	t0 = time.Now()
	for i := range pids {
		must(t, a.Remove(context.Background(), spec1(1000+i)))
	}
	removal := time.Since(t0)
	var pids2 []int
	for range many {
		pid, stop := startProc(t)
		t.Cleanup(stop)
		pids2 = append(pids2, pid)
	}
	t0 = time.Now()
	for i, pid := range pids2 {
		ipSetup(t, n, spec1(1000+i), pid, true)
	}
	ipMany := time.Since(t0)
	rows = append(rows,
		fmt.Sprintf("| vzd Apply, %d containers in turn | (same test) | 1 | %s | |", many, ms(setup)),
		fmt.Sprintf("| ip tool (two batches each), %d containers in turn | (same test) | 1 | %s | %.1f× |", many, ms(ipMany), float64(ipMany)/float64(setup)),
		fmt.Sprintf("| vzd Apply again, %d converged containers (no change) | (same test) | 1 | %s | |", many, ms(again)),
		fmt.Sprintf("| vzd Remove, %d containers | (same test) | 1 | %s | |", many, ms(removal)),
	)
	t0 = time.Now()
	for i := range pids2 {
		ipTeardown(t, n, spec1(1000+i))
	}
	rows = append(rows, fmt.Sprintf("| ip tool, %d containers removed (one batch each) | (same test) | 1 | %s | %.1f× |", many, ms(time.Since(t0)), float64(time.Since(t0))/float64(removal)))
	body := "| what | command | runs | median (ms) | ip tool / vzd |\n|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	must(t, os.WriteFile(out, []byte(body), 0o644))
}

// ipSetup does with the ip tool what Apply does for a routed container
// with one IPv4 and one IPv6 address.
func ipSetup(t *testing.T, n *node, c *spec.Container, pid int, batch bool) {
	t.Helper()
	ifc := c.Network.Interfaces[0]
	host := HostIfName("vzt", c.ID, 0)
	v4, v6 := ifc.IPs[0], ifc.IPs[1]
	hostCmds := []string{
		fmt.Sprintf("link add %s mtu 1500 up type veth peer name eth0 address %s mtu 1500 netns %d", host, MAC(c.ID, "eth0"), pid),
		fmt.Sprintf("link set %s alias %s", host, alias(c.ID, "eth0")),
		fmt.Sprintf("addr add 169.254.0.1/32 dev %s scope link", host),
		fmt.Sprintf("addr add fe80::1/64 dev %s nodad", host),
		fmt.Sprintf("route add %s/32 dev %s scope link proto 118", v4.Addr(), host),
		fmt.Sprintf("route add %s/128 dev %s proto 118", v6.Addr(), host),
		fmt.Sprintf("neigh replace proxy %s dev uplink", v4.Addr()),
		fmt.Sprintf("neigh replace proxy %s dev uplink", v6.Addr()),
	}
	ctCmds := []string{
		fmt.Sprintf("addr add %s dev eth0 noprefixroute", v4),
		fmt.Sprintf("addr add %s dev eth0 nodad noprefixroute", v6),
		"link set eth0 up",
		"link set lo up",
		"route replace default via 169.254.0.1 dev eth0 onlink proto 118",
		"route replace default via fe80::1 dev eth0 proto 118",
	}
	run := func(stdin string, name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, b)
		}
	}
	if batch {
		run(strings.Join(hostCmds, "\n")+"\n", "ip", "-n", n.name, "-batch", "-")
		run(strings.Join(ctCmds, "\n")+"\n", "nsenter", "-t", fmt.Sprint(pid), "-n", "ip", "-batch", "-")
	} else {
		for _, c := range hostCmds {
			run("", "ip", append([]string{"-n", n.name}, strings.Fields(c)...)...)
		}
		for _, c := range ctCmds {
			run("", "nsenter", append([]string{"-t", fmt.Sprint(pid), "-n", "ip"}, strings.Fields(c)...)...)
		}
	}
	run("", "ip", "netns", "exec", n.name, "sysctl", "-q", "-w",
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net/ipv4/conf/"+host+"/proxy_arp=1", "net.ipv6.conf.uplink.proxy_ndp=1")
}

func ipTeardown(t *testing.T, n *node, c *spec.Container) {
	t.Helper()
	ifc := c.Network.Interfaces[0]
	host := HostIfName("vzt", c.ID, 0)
	cmds := fmt.Sprintf("link del %s\nneigh del proxy %s dev uplink\nneigh del proxy %s dev uplink\n", host, ifc.IPs[0].Addr(), ifc.IPs[1].Addr())
	cmd := exec.Command("ip", "-n", n.name, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("teardown: %v: %s", err, b)
	}
}

// startProc is startContainer with an explicit stop, so a long benchmark
// does not keep hundreds of processes until it ends.
func startProc(t *testing.T) (int, func()) {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "--uts", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	for range 500 {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && l != self {
			return cmd.Process.Pid, stop
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	t.Fatal("process did not enter its namespaces")
	return 0, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }
