package nat_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/tcptest"
)

// A TCP connection through node a goes on through node b once the VIP moves there and a is
// gone, because b restored a's flows first; without them b's own stack answers the next
// segment with a reset. The VIP moves as routing moves it: the client and the member each
// reach the VIP through a first, then through b (the member's replies go to the VIP, the
// source the table gives flows to members).
func TestRestoredFlowsCarryConnectionsOnAfterAMove(t *testing.T) {
	for _, restore := range []bool{true, false} {
		t.Run(fmt.Sprintf("restored=%v", restore), func(t *testing.T) { moveVIP(t, restore) })
	}
}

func moveVIP(t *testing.T, restore bool) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	id := os.Getpid() % 100000
	cli, a, b, mem := fmt.Sprintf("l4c%d", id), fmt.Sprintf("l4a%d", id), fmt.Sprintf("l4b%d", id), fmt.Sprintf("l4m%d", id)
	for _, ns := range []string{cli, a, b, mem} {
		exec.Command("ip", "netns", "del", ns).Run()
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	// client eth0 - a c0, client eth1 - b c0; member eth0 - a m0, member eth1 - b m0.
	run(t, "ip", "-n", a, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", cli)
	run(t, "ip", "-n", b, "link", "add", "c0", "type", "veth", "peer", "name", "eth1", "netns", cli)
	run(t, "ip", "-n", a, "link", "add", "m0", "type", "veth", "peer", "name", "eth0", "netns", mem)
	run(t, "ip", "-n", b, "link", "add", "m0", "type", "veth", "peer", "name", "eth1", "netns", mem)
	for _, x := range [][]string{
		{cli, "eth0", "10.233.1.2/24"}, {a, "c0", "10.233.1.1/24"},
		{cli, "eth1", "10.233.3.2/24"}, {b, "c0", "10.233.3.1/24"},
		{mem, "eth0", "10.233.2.2/24"}, {a, "m0", "10.233.2.1/24"},
		{mem, "eth1", "10.233.4.2/24"}, {b, "m0", "10.233.4.1/24"},
	} {
		run(t, "ip", "-n", x[0], "addr", "add", x[2], "dev", x[1])
		run(t, "ip", "-n", x[0], "link", "set", x[1], "up")
		run(t, "ip", "-n", x[0], "link", "set", "lo", "up")
	}
	const vipAddr = "10.233.9.9"
	for _, n := range []string{a, b} {
		run(t, "ip", "-n", n, "addr", "add", vipAddr+"/32", "dev", "lo")
		run(t, "ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	// b reaches the client's and the member's first addresses through its own links.
	run(t, "ip", "-n", b, "route", "add", "10.233.1.2/32", "via", "10.233.3.2")
	run(t, "ip", "-n", b, "route", "add", "10.233.2.2/32", "via", "10.233.4.2")
	run(t, "ip", "-n", cli, "route", "add", vipAddr+"/32", "via", "10.233.1.1")
	run(t, "ip", "-n", mem, "route", "add", vipAddr+"/32", "via", "10.233.2.1")

	var member netip.AddrPort
	in(t, mem, func() {
		member = tcptest.Serve(t, "10.233.2.2:0", func(c net.Conn) { io.Copy(c, c) }).Addr
	})
	vip := netip.MustParseAddrPort(vipAddr + ":80")
	l := nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}
	tables := map[string]*nat.Table{}
	for _, n := range []string{a, b} {
		in(t, n, func() {
			tb, err := nat.Open("l4lb-test", nat.DefaultTag)
			if err != nil {
				t.Fatal(err)
			}
			apply(t, tb, l)
			tables[n] = tb
		})
	}

	type event struct {
		f     nat.Flow
		ended bool
	}
	events := make(chan event, 16)
	in(t, a, func() {
		stop, _, err := tables[a].Watch(func(f nat.Flow, ended bool) { events <- event{f, ended} })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	})
	var c net.Conn
	in(t, cli, func() {
		var err error
		if c, err = net.DialTimeout("tcp", vip.String(), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	r := bufio.NewReader(c)
	echo := func(msg string) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintln(c, msg); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg+"\n" {
			return fmt.Errorf("echo %q: got %q, %v", msg, got, err)
		}
		return nil
	}
	if err := echo("through a"); err != nil {
		t.Fatal(err)
	}

	var flows []nat.Flow
	in(t, a, func() {
		var err error
		if flows, err = tables[a].Flows(); err != nil {
			t.Fatal(err)
		}
	})
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if len(flows) != 1 || flows[0].Client != local || flows[0].VIP != vip || flows[0].Member != member ||
		flows[0].Source.Addr() != vip.Addr() || flows[0].Protocol != unix.IPPROTO_TCP {
		t.Fatalf("a's flows: %+v; want one from %v to %v, to member %v from the VIP", flows, local, vip, member)
	}
	select {
	case e := <-events:
		if e.ended || e.f != flows[0] {
			t.Fatalf("a's watch saw %+v; want %+v start", e, flows[0])
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a's watch did not see the connection start")
	}
	if restore {
		in(t, b, func() {
			n, err := tables[b].Restore(flows)
			if err != nil || n != 1 {
				t.Fatalf("restored %d of 1: %v", n, err)
			}
			// Once more: what conntrack has is left as it is.
			if n, err := tables[b].Restore(flows); err != nil || n != 0 {
				t.Fatalf("restored %d again (want 0): %v", n, err)
			}
		})
	}
	// a dies; the VIP is reached through b.
	run(t, "ip", "netns", "del", a)
	run(t, "ip", "-n", cli, "route", "replace", vipAddr+"/32", "via", "10.233.3.1")
	run(t, "ip", "-n", mem, "route", "replace", vipAddr+"/32", "via", "10.233.4.1")
	err := echo("through b")
	switch {
	case restore && err != nil:
		t.Fatalf("the connection did not go on through b: %v", err)
	case !restore && err == nil:
		t.Fatal("without a's flows, b carried the connection on: the test proves nothing")
	}
	if restore {
		in(t, b, func() {
			st, err := tables[b].Stats()
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Members["ns/l"]["m"]; got.Active != 1 || got.BytesIn == 0 {
				t.Fatalf("b counts the restored connection as %+v: want it active, its bytes counted", got)
			}
		})
	}
}

// BenchmarkRestore writes b.N flows of one listener into a fresh network namespace's
// conntrack, as a node taking a VIP over does before it answers for it: the time it takes is
// added to the failover of a VIP with that many open connections.
func BenchmarkRestore(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to make network namespaces")
	}
	ns := fmt.Sprintf("l4r%d", os.Getpid()%100000)
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	vip, member := netip.MustParseAddrPort("10.234.9.9:80"), netip.MustParseAddrPort("10.234.2.2:8080")
	flows := make([]nat.Flow, b.N)
	for i := range flows {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 235, byte(i >> 16), byte(i >> 8)}), uint16(1024+i%60000))
		flows[i] = nat.Flow{Protocol: unix.IPPROTO_TCP, Client: client, VIP: vip, Member: member,
			Source: netip.AddrPortFrom(vip.Addr(), client.Port())}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer target.Close()
	netns.Set(target)
	defer netns.Set(orig)
	tb, err := nat.Open("l4lb-bench", nat.DefaultTag)
	if err != nil {
		b.Fatal(err)
	}
	defer tb.Close()
	if err := tb.Apply([]nat.Listener{{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n, err := tb.Restore(flows)
	b.StopTimer()
	if err != nil || n != b.N {
		b.Fatalf("restored %d of %d: %v", n, b.N, err)
	}
}
