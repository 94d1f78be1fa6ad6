package nat_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/synflood"
	"github.com/l4lb/l4lb/test/tcptest"
)

// routedNode is a client, a node holding the VIPs (on its lo, forwarding) and a member, each
// a network namespace, in both families; the member routes the VIPs through the node.
type routedNode struct {
	cli, node, mem string
	vip4, vip6     netip.Addr
}

func newRoutedNode(t *testing.T) routedNode {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	id := os.Getpid() % 100000
	r := routedNode{cli: fmt.Sprintf("l4sc%d", id), node: fmt.Sprintf("l4sn%d", id), mem: fmt.Sprintf("l4sm%d", id),
		vip4: netip.MustParseAddr("10.232.1.100"), vip6: netip.MustParseAddr("fd00:232:1::100")}
	for _, ns := range []string{r.cli, r.node, r.mem} {
		exec.Command("ip", "netns", "del", ns).Run()
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", r.node, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", r.cli)
	run(t, "ip", "-n", r.node, "link", "add", "m0", "type", "veth", "peer", "name", "eth0", "netns", r.mem)
	for _, a := range [][]string{
		{r.cli, "eth0", "10.232.1.2/24", "fd00:232:1::2/64"}, {r.node, "c0", "10.232.1.1/24", "fd00:232:1::1/64"},
		{r.mem, "eth0", "10.232.2.2/24", "fd00:232:2::2/64"}, {r.node, "m0", "10.232.2.1/24", "fd00:232:2::1/64"},
	} {
		run(t, "ip", "-n", a[0], "addr", "add", a[2], "dev", a[1])
		run(t, "ip", "-n", a[0], "addr", "add", a[3], "dev", a[1], "nodad")
		run(t, "ip", "-n", a[0], "link", "set", a[1], "up")
	}
	run(t, "ip", "-n", r.node, "addr", "add", r.vip4.String()+"/32", "dev", "lo")
	run(t, "ip", "-n", r.node, "addr", "add", r.vip6.String()+"/128", "dev", "lo")
	run(t, "ip", "netns", "exec", r.node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	run(t, "ip", "-n", r.mem, "route", "add", r.vip4.String()+"/32", "via", "10.232.2.1")
	run(t, "ip", "-n", r.mem, "-6", "route", "add", r.vip6.String()+"/128", "via", "fd00:232:2::1")
	run(t, "ip", "-n", r.cli, "-6", "route", "add", r.vip6.String()+"/128", "via", "fd00:232:1::1")
	// A flood's spoofed sources are reached through the client, which drops what it gets.
	run(t, "ip", "-n", r.node, "route", "add", "10.99.128.0/17", "via", "10.232.1.2")
	return r
}

// table opens a table on the node carrying ls.
func (r routedNode) table(t *testing.T, ls ...nat.Listener) *nat.Table {
	var tb *nat.Table
	in(t, r.node, func() {
		var err error
		if tb, err = nat.Open("l4lb-test", nat.DefaultTag); err != nil {
			t.Fatal(err)
		}
		apply(t, tb, ls...) // deleting the namespace takes the table with it
	})
	return tb
}

// closer serves connections on the member by closing them; it returns its address.
func (r routedNode) closer(t *testing.T) netip.AddrPort {
	var member netip.AddrPort
	in(t, r.mem, func() {
		member = tcptest.Serve(t, "10.232.2.2:0", func(c net.Conn) { c.Close() }).Addr
	})
	return member
}

// flood sends SYNs at vip from the client host, rate a second for d, from spoofed sources
// of 10.99.128.0/17 (which the node routes back to the client host).
func (r routedNode) flood(t *testing.T, vip netip.AddrPort, rate int, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	in(t, r.cli, func() {
		if _, err := synflood.Send(ctx, vip, netip.MustParsePrefix("10.99.128.0/17"), rate); err != nil {
			t.Fatal(err)
		}
	})
}

// The SYN proxy carries IPv6 listeners too: a connection to a flooded listener's IPv6 VIP is
// set up by it (labelled, shifted), and carries bytes both ways.
func TestSynProxyCarriesIPv6(t *testing.T) {
	r := newRoutedNode(t)
	var member netip.AddrPort
	in(t, r.mem, func() {
		member = tcptest.Serve(t, "[fd00:232:2::2]:0", func(c net.Conn) { io.Copy(c, c) }).Addr
	})
	vip := netip.AddrPortFrom(r.vip6, 80)
	l := nat.Listener{Key: "ns/l6", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin, SynProxy: true,
		Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}
	tb := r.table(t, l)
	in(t, r.node, func() {
		if err := tb.Flood([]string{l.Key}); err != nil {
			t.Fatal(err)
		}
	})
	var c net.Conn
	in(t, r.cli, func() {
		var err error
		if c, err = net.DialTimeout("tcp", vip.String(), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintln(c, "over IPv6")
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "over IPv6\n" {
		t.Fatalf("echo through the SYN proxy: %q, %v", got, err)
	}
	in(t, r.node, func() {
		flows, err := tb.Flows()
		if err != nil || len(flows) != 1 || !flows[0].SynProxy.Set || !flows[0].SynProxy.Adjusted || flows[0].Member != member {
			t.Fatalf("the node's flows: %+v, %v; want the connection, set up by the SYN proxy, its shift known", flows, err)
		}
	})
}

// A flood from spoofed sources leaves connections its member answered and nobody else did:
// Stats counts them half-open, which is how the agent tells a flooded listener (once it is,
// the SYN proxy answers the SYNs and none is left half-open).
func TestStatsCountAFloodsHalfOpenConnections(t *testing.T) {
	r := newRoutedNode(t)
	member := r.closer(t)
	vip := netip.AddrPortFrom(r.vip4, 80)
	l := nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin, SynProxy: true,
		ConnectTimeout: time.Minute, Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}
	tb := r.table(t, l)
	// Counted both ways: from the dump of every flow, and from the kernel's dump of the
	// answered, unassured ones alone (what the agent reads each second).
	halfOpen := func() int {
		var n [2]int
		in(t, r.node, func() {
			for i, open := range []bool{true, false} {
				st, err := tb.Stats(open)
				if err != nil {
					t.Fatal(err)
				}
				n[i] = st.Members["ns/l"]["m"].HalfOpen
			}
		})
		if n[0] != n[1] {
			t.Fatalf("%d half-open counted among all flows, %d among the answered, unassured ones", n[0], n[1])
		}
		return n[0]
	}
	r.flood(t, vip, 200, 500*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the member's answers
	if n := halfOpen(); n < 80 {
		t.Fatalf("%d half-open after 100 spoofed SYNs; want nearly all", n)
	}
	in(t, r.node, func() {
		if err := tb.Flood([]string{l.Key}); err != nil {
			t.Fatal(err)
		}
	})
	before := halfOpen()
	r.flood(t, vip, 200, 500*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	if n := halfOpen(); n > before {
		t.Fatalf("%d half-open once flooded (%d before): the SYN proxy should have answered the SYNs", n, before)
	}
}

// A flooded listener's SYNs skip conntrack (no lookup, no entry, no NAT binding) and go to
// the SYN proxy, but only from its allowed sources: the others are refused as ever.
func TestAFloodsSYNsSkipConntrack(t *testing.T) {
	r := newRoutedNode(t)
	member := r.closer(t)
	vip := netip.AddrPortFrom(r.vip4, 80)
	// Half of the flood's sources (10.99.128.0/17) are allowed.
	l := nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin, SynProxy: true,
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.99.128.0/18"), netip.MustParsePrefix("10.232.1.0/24")},
		Members:      []nat.Member{{Key: "m", Address: member, Weight: 1}}}
	tb := r.table(t, l)
	var before, after nat.Stats
	var untracked func() uint64
	in(t, r.node, func() {
		if err := tb.Flood([]string{l.Key}); err != nil {
			t.Fatal(err)
		}
		before = stats(t, tb)
		untracked = countUntrackedSYNs(t)
	})
	const sent = 400
	r.flood(t, vip, sent/2, 2*time.Second)
	time.Sleep(200 * time.Millisecond)
	var skipped uint64
	in(t, r.node, func() {
		after = stats(t, tb)
		skipped = untracked()
	})
	cookies, refused := after.Cookies[l.Key]-before.Cookies[l.Key], after.Refused[l.Key]-before.Refused[l.Key]
	if cookies < sent/4 || refused < sent/4 || cookies+refused < sent*9/10 {
		t.Fatalf("of about %d SYNs, %d went to the SYN proxy and %d were refused; want about half each", sent, cookies, refused)
	}
	if skipped < cookies {
		t.Fatalf("%d SYNs reached the node untracked; want the %d the SYN proxy answered", skipped, cookies)
	}
	// The proxy still sets up a real client's connection, untracked SYN and all.
	in(t, r.cli, func() {
		c, err := net.DialTimeout("tcp", vip.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}

func stats(t *testing.T, tb *nat.Table) nat.Stats {
	t.Helper()
	st, err := tb.Stats(false)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// countUntrackedSYNs adds, in the calling thread's network namespace, a table of the test's
// own that counts the SYNs conntrack does not track as they reach a local address; it
// returns their count so far.
func countUntrackedSYNs(t *testing.T) func() uint64 {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Name: "probe", Family: nftables.TableFamilyINet})
	ch := c.AddChain(&nftables.Chain{Name: "in", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	cnt := c.AddObj(&nftables.NamedObj{Table: tb, Name: "untracked", Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitUNTRACKED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: "untracked"},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() uint64 {
		o, err := c.GetObject(cnt)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*nftables.NamedObj).Obj.(*expr.Counter).Packets
	}
}
