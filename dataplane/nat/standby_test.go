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
	"strconv"
	"strings"
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
		t.Run(fmt.Sprintf("restored=%v", restore), func(t *testing.T) { moveVIP(t, restore, false) })
	}
}

// The same for a connection the SYN proxy set up (its listener flooded): b carries it on only
// with its sequence shift; without it the member's segments reach the client out of its
// window.
func TestSynProxiedConnectionsCarryOnAfterAMove(t *testing.T) {
	for _, restore := range []bool{true, false} {
		t.Run(fmt.Sprintf("restored with its shifts=%v", restore), func(t *testing.T) { moveVIP(t, restore, true) })
	}
}

func moveVIP(t *testing.T, restore, synproxied bool) {
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
	l.SynProxy = true // engaged only while flooded
	tables := map[string]*nat.Table{}
	for _, n := range []string{a, b} {
		in(t, n, func() {
			tb, err := nat.Open("l4lb-test", nat.DefaultTag)
			if err != nil {
				t.Fatal(err)
			}
			apply(t, tb, l)
			tables[n] = tb
			if synproxied && n == a {
				if err := tb.Flood([]string{l.Key}); err != nil {
					t.Fatal(err)
				}
			}
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
	var r *bufio.Reader
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
	var flows []nat.Flow
	for len(flows) == 0 {
		if c != nil {
			t.Fatalf("the connection was not set up by the SYN proxy=%v", synproxied)
		}
		in(t, cli, func() {
			var err error
			if c, err = net.DialTimeout("tcp", vip.String(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
		})
		r = bufio.NewReader(c)
		if err := echo("through a"); err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		in(t, a, func() {
			all, err := tables[a].Flows()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range all {
				if f.Client == local && f.SynProxy.Set == synproxied {
					flows = append(flows, f)
				}
			}
		})
	}
	defer c.Close()
	if f := flows[0]; f.VIP != vip || f.Member != member || f.Source.Addr() != vip.Addr() ||
		f.Protocol != unix.IPPROTO_TCP || !f.Complete() {
		t.Fatalf("a's flow: %+v; want one to %v, to member %v from the VIP, complete", f, vip, member)
	}
	// The watch tells of each connection as it starts; of one the SYN proxy set up, without
	// its shift (conntrack's event comes before the member answers): Table.Reread completes
	// it.
	deadline := time.After(2 * time.Second)
	for seen := false; !seen; {
		select {
		case e := <-events:
			want := flows[0]
			want.SynProxy.SeqOffset, want.SynProxy.Adjusted = 0, false
			seen = !e.ended && e.f.Client == want.Client
			if seen && e.f != want {
				t.Fatalf("a's watch saw %+v; want %+v start", e, want)
			}
		case <-deadline:
			t.Fatal("a's watch did not see the connection start")
		}
	}
	in(t, a, func() {
		if c, err := nat.ReadSynCookies(); err != nil || (c.Valid > 0) != synproxied || (c.Sent > 0) != synproxied {
			t.Fatalf("a's SYN cookies: %+v, %v; want some sent and taken only through the SYN proxy", c, err)
		}
		f := flows[0]
		f.SynProxy.SeqOffset, f.SynProxy.Adjusted = 0, false // as the watch told of it
		if got, err := tables[a].Reread([]nat.Flow{f}); err != nil || len(got) != 1 || got[0] != flows[0] {
			t.Fatalf("a reread %+v as %+v, %v; want %+v", f, got, err, flows[0])
		}
	})
	works := restore
	if synproxied && !restore {
		// Restored, but without what the SYN proxy shifts.
		restore = true
		flows[0].SynProxy = nat.SynProxied{}
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
	// Long enough to be counted on a connection without timestamps (the SYN proxy's), whose
	// segments' headers are 12 bytes shorter than counting takes them to be.
	err := echo("through b " + strings.Repeat("-", 100))
	switch {
	case works && err != nil:
		t.Fatalf("the connection did not go on through b: %v", err)
	case !works && err == nil:
		t.Fatal("without a's flows as they were, b carried the connection on: the test proves nothing")
	}
	if works {
		in(t, b, func() {
			st, err := tables[b].Stats(true)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Members["ns/l"]["m"]; got.Active != 1 || got.BytesIn == 0 {
				t.Fatalf("b counts the restored connection as %+v: want it active, its bytes counted", got)
			}
		})
	}
}

// benchNamespace makes a fresh network namespace, deleted when b ends, and returns its name.
func benchNamespace(b *testing.B, prefix string) string {
	if os.Geteuid() != 0 {
		b.Skip("needs root to make network namespaces")
	}
	ns := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

// benchTable opens a table carrying one TCP listener, of one member, in the calling thread's
// network namespace, and returns it with n flows of that listener from distinct clients.
func benchTable(b *testing.B, n int) (*nat.Table, []nat.Flow) {
	vip, member := netip.MustParseAddrPort("10.234.9.9:80"), netip.MustParseAddrPort("10.234.2.2:8080")
	tb, err := nat.Open("l4lb-bench", nat.DefaultTag)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tb.Close() })
	if err := tb.Apply([]nat.Listener{{Key: "ns/l", Protocol: model.TCP, Address: vip, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "m", Address: member, Weight: 1}}}}); err != nil {
		b.Fatal(err)
	}
	flows := make([]nat.Flow, n)
	for i := range flows {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 235, byte(i >> 16), byte(i >> 8)}), uint16(1024+i%60000))
		flows[i] = nat.Flow{Protocol: unix.IPPROTO_TCP, Client: client, VIP: vip, Member: member,
			Source: netip.AddrPortFrom(vip.Addr(), client.Port())}
	}
	return tb, flows
}

// BenchmarkRestore writes b.N flows of one listener into a fresh network namespace's
// conntrack, as a node taking a VIP over does before it answers for it: the time it takes is
// added to the failover of a VIP with that many open connections.
func BenchmarkRestore(b *testing.B) {
	ns := benchNamespace(b, "l4r")
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
	tb, flows := benchTable(b, b.N)
	b.ResetTimer()
	n, err := tb.Restore(flows)
	b.StopTimer()
	if err != nil || n != b.N {
		b.Fatalf("restored %d of %d: %v", n, b.N, err)
	}
}

// readFlowsEnv set tells BenchmarkReadFlows it runs as its own child, in its namespace.
const readFlowsEnv = "L4LB_READ_FLOWS_CHILD"

// BenchmarkReadFlows reads a table carrying 50,000 flows as the agent does on a node whose
// kernel path carries that many: counting the open ones (Stats with open flows, every few
// seconds) and listing them (Flows, a VIP holder's snapshot for its successor). The reads run
// in a child process started in a fresh network namespace, as the agent runs in its own: a
// thread locked into the namespace would add a hand-off between threads to each read of the
// dump, which the agent does not pay. Reported: ms/count and ms/snapshot, and the
// allocations each makes a flow.
func BenchmarkReadFlows(b *testing.B) {
	const flows = 50000
	units := []string{"ms/count", "allocs/flow/count", "ms/snapshot", "allocs/flow/snapshot"}
	if os.Getenv(readFlowsEnv) == "" {
		cmd := exec.Command("ip", "netns", "exec", benchNamespace(b, "l4rf"), os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkReadFlows$",
			fmt.Sprintf("-test.benchtime=%dx", b.N))
		cmd.Env = append(os.Environ(), readFlowsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		// BenchmarkReadFlows-2   N   T ns/op   V1 ms/count   V2 allocs/flow/count ...
		got := map[string]float64{}
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[0], "BenchmarkReadFlows") {
				for i := 2; i+1 < len(f); i += 2 {
					got[f[i+1]], _ = strconv.ParseFloat(f[i], 64)
				}
			}
		}
		for _, u := range units {
			v, ok := got[u]
			if !ok {
				b.Fatalf("no %s from the child: %s", u, out)
			}
			b.ReportMetric(v, u)
		}
		return
	}
	tb, fs := benchTable(b, flows)
	if n, err := tb.Restore(fs); err != nil || n != flows {
		b.Fatalf("restored %d of %d: %v", n, flows, err)
	}
	measure := func(read func() int) (ms, allocs float64) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		start, was := time.Now(), m.Mallocs
		for range b.N {
			if got := read(); got != flows {
				b.Fatalf("%d flows read, want %d", got, flows)
			}
		}
		runtime.ReadMemStats(&m)
		n := float64(b.N)
		return float64(time.Since(start).Milliseconds()) / n, float64(m.Mallocs-was) / n / flows
	}
	count, countAllocs := measure(func() int {
		st, err := tb.Stats(true)
		if err != nil {
			b.Fatal(err)
		}
		return st.Members["ns/l"]["m"].Active
	})
	snapshot, snapshotAllocs := measure(func() int {
		all, err := tb.Flows()
		if err != nil {
			b.Fatal(err)
		}
		return len(all)
	})
	for i, v := range []float64{count, countAllocs, snapshot, snapshotAllocs} {
		b.ReportMetric(v, units[i])
	}
}
