package nat_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// in runs f with the calling goroutine's thread in the network namespace ns: sockets and
// netlink connections f makes belong to ns.
func in(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// A client on one network, the load balancer's node, and a member on another network that
// routes the VIP through the node and has no route to the client: the flow is forwarded through the
// node with the VIP as its source, so the member answers the VIP, and the client gets its
// answer from the VIP. This is how a node reaches members that are not on it.
func TestForwardedFlowsReachMembersElsewhere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	id := os.Getpid() % 100000
	cli, lb, mem := fmt.Sprintf("l4c%d", id), fmt.Sprintf("l4n%d", id), fmt.Sprintf("l4m%d", id)
	for _, ns := range []string{cli, lb, mem} {
		exec.Command("ip", "netns", "del", ns).Run()
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", lb, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", cli)
	run(t, "ip", "-n", lb, "link", "add", "m0", "type", "veth", "peer", "name", "eth0", "netns", mem)
	for _, a := range [][]string{
		{cli, "eth0", "10.231.1.2/24"}, {lb, "c0", "10.231.1.1/24"},
		{mem, "eth0", "10.231.2.2/24"}, {lb, "m0", "10.231.2.1/24"},
	} {
		run(t, "ip", "-n", a[0], "addr", "add", a[2], "dev", a[1])
		run(t, "ip", "-n", a[0], "link", "set", a[1], "up")
		run(t, "ip", "-n", a[0], "link", "set", "lo", "up")
	}
	// The VIP is on the node's lo, as the agent puts it, and answered for by ARP.
	run(t, "ip", "-n", lb, "addr", "add", "10.231.1.100/32", "dev", "lo")
	run(t, "ip", "netns", "exec", lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(t, "ip", "-n", mem, "route", "add", "10.231.1.100/32", "via", "10.231.2.1")
	vip := netip.MustParseAddrPort("10.231.1.100:5353")

	var member netip.AddrPort
	in(t, mem, func() { member = udptest.EchoAt(t, "10.231.2.2", "m") })
	var tb *nat.Table
	l := nat.Listener{Key: "ns/l", Address: vip, Algorithm: model.RoundRobin, Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}
	in(t, lb, func() {
		var err error
		if tb, err = nat.Open("l4lb-test", nat.DefaultTag); err != nil {
			t.Fatal(err)
		}
		// Deleting the namespace takes the table and its flows with it.
		if !nat.ReadNode().Eligible(model.Listener{Protocol: model.UDP, ConnectionLimit: model.DefaultConnectionLimit, Pool: &model.Pool{Algorithm: model.RoundRobin,
			Members: []model.Member{{Address: member}}}}) {
			t.Fatal("a member elsewhere is not eligible on a node that forwards")
		}
		apply(t, tb, l)
	})
	var c *net.UDPConn
	in(t, cli, func() { c = client(t, "", vip) })
	for i := range 3 {
		if got := ask(t, c, fmt.Sprint("hello ", i)); got != "m" {
			t.Fatalf("datagram %d: answer from %q through the node", i, got)
		}
	}
	in(t, lb, func() {
		st, err := tb.Stats(true)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Members["ns/l"]["m"]; got.Flows != 1 || got.BytesIn != 3*7 || got.Active != 1 {
			t.Fatalf("counts %+v, want one flow of 21 bytes in", got)
		}
	})
}

// connectionLimit 0 admits nothing on either path: the kernel, whose table reads 0 as no cap,
// leaves such a listener to the proxy, which refuses each connection.
func TestAListenerThatAdmitsNothingStaysOnTheProxy(t *testing.T) {
	l := model.Listener{Protocol: model.UDP, ConnectionLimit: 0, Pool: &model.Pool{Algorithm: model.RoundRobin}}
	if nat.ReadNode().Eligible(l) {
		t.Fatal("a listener with connectionLimit 0 went to the kernel, which would admit every flow")
	}
	l.ConnectionLimit = model.DefaultConnectionLimit
	if !nat.ReadNode().Eligible(l) {
		t.Fatal("a plain UDP listener is not eligible")
	}
}

// A member on one of the node's own addresses (a NodePort, as cloud-provider-openstack makes
// members of nodes) is left to the proxy: kube-proxy's translation of that address would never
// run after this table's.
func TestAMemberOnTheNodesOwnAddressStaysOnTheProxy(t *testing.T) {
	var own netip.Addr
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() && p.Addr().Is4() {
			own = p.Addr()
			break
		}
	}
	if !own.IsValid() {
		t.Fatal("this host has no address but loopback to try")
	}
	l := model.Listener{Key: "ns/l", Protocol: model.TCP, ConnectionLimit: model.DefaultConnectionLimit,
		Pool: &model.Pool{Key: "ns/p", Protocol: model.PoolTCP, Algorithm: model.RoundRobin,
			Members: []model.Member{{Name: "node", Address: netip.AddrPortFrom(own, 30080), Weight: 1, AdminStateUp: true}}}}
	if nat.ReadNode().Eligible(l) {
		t.Fatalf("a listener whose member is the node's own %v is carried by the kernel", own)
	}
	l.Pool.Members[0].Address = netip.MustParseAddrPort("127.0.0.1:30080")
	if !nat.ReadNode().Eligible(l) {
		t.Fatal("a listener whose member is on loopback is not carried by the kernel")
	}
}

// An ended kernel-path TCP connection is kept by conntrack for timeWait (10 s), not its own
// two minutes: the entry of a connection both sides closed says so. Meanwhile it is not
// counted open.
func TestAnEndedConnectionIsForgottenWithinTenSeconds(t *testing.T) {
	r := newRoutedNode(t)
	member := r.closer(t)
	vip := netip.AddrPortFrom(r.vip4, 80)
	tb := r.table(t, nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}})
	in(t, r.cli, func() {
		c, err := net.DialTimeout("tcp", vip.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadAll(c); err != nil { // the member closes at once
			t.Fatal(err)
		}
		c.Close()
	})
	var last string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var timeout uint32
		var ended bool
		in(t, r.node, func() {
			c, err := conntrack.Dial(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			flows, err := c.Dump(nil)
			if err != nil {
				t.Fatal(err)
			}
			last = fmt.Sprint(len(flows), " flows")
			for _, f := range flows {
				if f.TupleOrig.IP.DestinationAddress.Unmap() == vip.Addr() && f.ProtoInfo.TCP != nil {
					last = fmt.Sprintf("the connection's flow in TCP state %d, %d s left", f.ProtoInfo.TCP.State, f.Timeout)
					timeout, ended = f.Timeout, f.ProtoInfo.TCP.State == 7 // TIME_WAIT
				}
			}
		})
		if ended {
			if timeout == 0 || timeout > 10 {
				t.Fatalf("an ended connection is kept %d s more; want at most 10", timeout)
			}
			// Counted among the member's connections, not among its open ones.
			in(t, r.node, func() {
				st, err := tb.Stats(true)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Members["ns/l"]["m"]; got.Flows != 1 || got.Active != 0 {
					t.Fatalf("counts %+v once the connection ended, want 1 flow and none open", got)
				}
			})
			return
		}
	}
	t.Fatalf("no ended connection in the node's table after 3 s: %s", last)
}
