package nat_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// open gives the test a table of its own, on loopback addresses only.
func open(t *testing.T) *nat.Table { return udptest.KernelTable(t, 0x4d) }

// client is a socket from src (empty: any) connected to addr: it only takes replies from addr.
func client(t *testing.T, src string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var laddr *net.UDPAddr
	if src != "" {
		laddr = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask sends msg and returns the answering member's name, or "" when nothing came back. A
// datagram the kernel drops on its way out of this host fails the write (EPERM): "" too.
func ask(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); errors.Is(err, syscall.EPERM) {
		return ""
	} else if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	name, payload, _ := strings.Cut(string(buf[:n]), ":")
	if payload != msg {
		t.Fatalf("answer %q to %q", buf[:n], msg)
	}
	return name
}

func listener(t *testing.T, alg model.Algorithm, members ...nat.Member) nat.Listener {
	return nat.Listener{Key: "ns/l", Address: udptest.HeldPort(t, "127.0.0.1"), Algorithm: alg, Timeout: time.Minute, Members: members}
}

// echoListeners are round-robin listeners ns/<name>, each with one echo member named name.
func echoListeners(t *testing.T, names ...string) []nat.Listener {
	var ls []nat.Listener
	for _, name := range names {
		l := listener(t, model.RoundRobin, nat.Member{Key: name, Address: udptest.Echo(t, name), Weight: 1})
		l.Key = "ns/" + name
		ls = append(ls, l)
	}
	return ls
}

// refusedAlone reports whether err names key, and only key, as refused by the kernel.
func refusedAlone(err error, key string) bool {
	var refused *nat.RefusedError
	return errors.As(err, &refused) && len(refused.Listeners) == 1 && refused.Listeners[key] != nil
}

func apply(t *testing.T, tb *nat.Table, ls ...nat.Listener) {
	t.Helper()
	if err := tb.Apply(ls); err != nil {
		t.Fatal(err)
	}
}

func TestRoundRobinFlowsFollowWeightsAndStayOnTheirMember(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin,
		nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 3}, nat.Member{Key: "b", Address: udptest.Echo(t, "b"), Weight: 1})
	apply(t, tb, l)
	var got []string
	for range 8 {
		// The agent applies its whole model after every change in the cluster: an Apply
		// that changes nothing must not start the turn again.
		apply(t, tb, l)
		c := client(t, "", l.Address) // the reply must come from the listener, or c drops it
		first := ask(t, c, "x")
		if again := ask(t, c, "y"); again != first {
			t.Fatalf("a flow moved from %q to %q", first, again)
		}
		got = append(got, first)
	}
	// Smooth weighted round robin, as the proxy turns it.
	if want := "a a b a a a b a"; strings.Join(got, " ") != want {
		t.Fatalf("flows went to %v, want %s", got, want)
	}
}

func TestSourceIPKeepsAClientOnOneMember(t *testing.T) {
	tb := open(t)
	l := listener(t, model.SourceIP,
		nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1}, nat.Member{Key: "b", Address: udptest.Echo(t, "b"), Weight: 1})
	apply(t, tb, l)
	seen := map[string]map[string]bool{}
	// The members' ports are random, so is the hash's split: with 24 clients, all on one
	// member is a chance of one in eight million, where eight clients made it one in 128.
	for i := range 24 {
		src := fmt.Sprintf("127.0.0.%d", i+1)
		seen[src] = map[string]bool{}
		for range 4 {
			seen[src][ask(t, client(t, src, l.Address), "x")] = true
		}
		if len(seen[src]) != 1 {
			t.Fatalf("flows from %s went to %v", src, seen[src])
		}
	}
	members := map[string]bool{}
	for _, m := range seen {
		for name := range m {
			members[name] = true
		}
	}
	if !members["a"] || !members["b"] {
		t.Fatalf("24 clients all went to %v", members)
	}
	// SOURCE_IP_PORT hashes the port too: one address's flows spread.
	l.Algorithm = model.SourceIPPort
	apply(t, tb, l)
	spread := map[string]bool{}
	for range 16 {
		spread[ask(t, client(t, "127.0.0.1", l.Address), "x")] = true
	}
	if !spread["a"] || !spread["b"] {
		t.Fatalf("16 flows from one address under SOURCE_IP_PORT went to %v", spread)
	}
}

func TestDownMemberLosesItsFlowsAndDrainingKeepsThem(t *testing.T) {
	tb := open(t)
	a, b := udptest.Echo(t, "a"), udptest.Echo(t, "b")
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: a, Weight: 1}, nat.Member{Key: "b", Address: b, Weight: 1})
	apply(t, tb, l)
	onA, onB := client(t, "", l.Address), client(t, "", l.Address)
	if ask(t, onA, "1") != "a" || ask(t, onB, "1") != "b" {
		t.Fatal("the first two flows did not go to a then b")
	}
	// b drains: its flow stays, new flows go to a.
	l.Members[1].Weight = 0
	apply(t, tb, l)
	if got := ask(t, onB, "2"); got != "b" {
		t.Fatalf("a draining member's flow moved to %q", got)
	}
	if got := ask(t, client(t, "", l.Address), "3"); got != "a" {
		t.Fatalf("a new flow went to %q while b drains", got)
	}
	// a goes down: its flow moves to the member left.
	l.Members[1].Weight = 1
	l.Members[0].Down = true
	apply(t, tb, l)
	if got := ask(t, onA, "4"); got != "b" {
		t.Fatalf("the flow of a member marked down answered from %q", got)
	}
}

func TestRefusalsAreCounted(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	l.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("::1/128")}
	l.ConnectionLimit = 2
	apply(t, tb, l)
	if got := ask(t, client(t, "127.0.0.1", l.Address), "x"); got != "" {
		t.Fatalf("a source outside allowedCIDRs got an answer from %q", got)
	}
	for i := range 2 { // two flows, up to the limit
		if got := ask(t, client(t, "127.0.0.2", l.Address), "x"); got != "a" {
			t.Fatalf("flow %d of an allowed source: answer from %q", i, got)
		}
	}
	if got := ask(t, client(t, "127.0.0.2", l.Address), "x"); got != "" {
		t.Fatalf("a third flow over a limit of 2 got an answer from %q", got)
	}
	st, err := tb.Stats(true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Refused["ns/l"] != 2 {
		t.Fatalf("refused %d datagrams, want 2", st.Refused["ns/l"])
	}
	// Without members every datagram is refused.
	l.Members, l.ConnectionLimit = nil, 0
	apply(t, tb, l)
	if got := ask(t, client(t, "127.0.0.2", l.Address), "x"); got != "" {
		t.Fatalf("a listener without members answered from %q", got)
	}
}

func TestStatsCountPayloadsFlowsAndOpenFlows(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	l.Timeout = time.Second
	apply(t, tb, l)
	for range 3 {
		c := client(t, "", l.Address)
		ask(t, c, "12345")
		ask(t, c, "12345")
	}
	st, err := tb.Stats(true)
	if err != nil {
		t.Fatal(err)
	}
	got := st.Members["ns/l"]["a"]
	// Six datagrams of 5 bytes in, six of "a:12345" out.
	if want := (nat.Counts{BytesIn: 30, BytesOut: 42, Flows: 3, Active: 3}); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	// The listener's timeout (1 s) ends idle flows, and not at once.
	time.Sleep(300 * time.Millisecond)
	if st, err = tb.Stats(true); err != nil {
		t.Fatal(err)
	}
	if n := st.Members["ns/l"]["a"].Active; n != 3 {
		t.Fatalf("%d flows open 0.3 s into a 1 s timeout, want 3", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.Members["ns/l"]["a"].Active > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d flows still open 5 s after a 1 s timeout", st.Members["ns/l"]["a"].Active)
		}
		time.Sleep(100 * time.Millisecond)
		if st, err = tb.Stats(true); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRemovedListenerEndsItsFlowsAndOthersServe(t *testing.T) {
	tb := open(t)
	one := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	two := listener(t, model.RoundRobin, nat.Member{Key: "b", Address: udptest.Echo(t, "b"), Weight: 1})
	two.Key = "ns/two"
	apply(t, tb, one, two)
	c1, c2 := client(t, "", one.Address), client(t, "", two.Address)
	if ask(t, c1, "x") != "a" || ask(t, c2, "x") != "b" {
		t.Fatal("the two listeners do not answer")
	}
	apply(t, tb, two)
	if got := ask(t, c1, "y"); got != "" {
		t.Fatalf("a removed listener's flow still reaches %q", got)
	}
	if got := ask(t, c2, "y"); got != "b" {
		t.Fatalf("the listener that stays answered %q", got)
	}
}

// Without listeners the table holds nothing, so conntrack is not turned on for the node's
// other traffic (NAT and ct expressions turn it on wherever their chain is).
func TestNoListenersNoHooks(t *testing.T) {
	tb := open(t)
	chains := func() (hooked, all int) {
		t.Helper()
		conn, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		cs, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Table.Name == tb.Name() {
				all++
				if c.Hooknum != nil {
					hooked++
				}
			}
		}
		return hooked, all
	}
	if _, n := chains(); n != 0 {
		t.Fatalf("a new table has %d chains", n)
	}
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	apply(t, tb, l)
	if n, _ := chains(); n == 0 {
		t.Fatal("a table with a listener hooks no chain")
	}
	if got := ask(t, client(t, "", l.Address), "x"); got != "a" {
		t.Fatalf("answer from %q", got)
	}
	l.Members[0].Weight = 2 // a change leaves the replaced chains for the next one to remove
	apply(t, tb, l)
	apply(t, tb)
	if _, n := chains(); n != 0 {
		t.Fatalf("a table without listeners still has %d chains", n)
	}
}

func TestIPv6FlowsAlternateAndRefuseOtherSources(t *testing.T) {
	tb := open(t)
	l := nat.Listener{Key: "ns/l6", Address: udptest.HeldPort(t, "::1"), Algorithm: model.RoundRobin, Timeout: time.Minute,
		Members: []nat.Member{{Key: "a", Address: udptest.EchoAt(t, "::1", "a"), Weight: 1}, {Key: "b", Address: udptest.EchoAt(t, "::1", "b"), Weight: 1}},
		// The v4 prefix says nothing about v6 clients; ::1 is let in by its own.
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	apply(t, tb, l)
	var got []string
	for range 4 {
		got = append(got, ask(t, client(t, "", l.Address), "x"))
	}
	if strings.Join(got, " ") != "a b a b" {
		t.Fatalf("flows went to %v", got)
	}
	l.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00::/8")}
	apply(t, tb, l)
	if got := ask(t, client(t, "", l.Address), "x"); got != "" {
		t.Fatalf("a source outside allowedCIDRs got an answer from %q", got)
	}
}

// A change to one listener leaves the others' rules as they are: round robin keeps its turn.
func TestOtherChangesKeepRoundRobinTurning(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin,
		nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1}, nat.Member{Key: "b", Address: udptest.Echo(t, "b"), Weight: 1})
	other := listener(t, model.RoundRobin, nat.Member{Key: "c", Address: udptest.Echo(t, "c"), Weight: 1})
	other.Key = "ns/other"
	var got []string
	for i := range 4 {
		other.Members[0].Weight = i + 1
		apply(t, tb, l, other)
		got = append(got, ask(t, client(t, "", l.Address), "x"))
	}
	if strings.Join(got, " ") != "a b a b" {
		t.Fatalf("flows went to %v while another listener changed", got)
	}
}

// D6 for the kernel path: a member added and removed every 100 ms while flows start and run;
// every datagram is answered, since each change is one transaction and running flows keep
// their member.
func TestChurnLosesNoDatagram(t *testing.T) {
	tb := open(t)
	a := nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1}
	b := nat.Member{Key: "b", Address: udptest.Echo(t, "b"), Weight: 1}
	c := nat.Member{Key: "c", Address: udptest.Echo(t, "c"), Weight: 1}
	l := listener(t, model.RoundRobin, a, b)
	apply(t, tb, l)
	done := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		ls := []nat.Listener{l, l}
		ls[1].Members = []nat.Member{a, b, c}
		for i := 0; ; i++ {
			select {
			case <-done:
				churned <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
			if err := tb.Apply(ls[i%2 : i%2+1]); err != nil {
				churned <- err
				return
			}
		}
	}()
	long := client(t, "", l.Address)
	end := time.Now().Add(2 * time.Second)
	lost := 0
	n := 0
	for ; time.Now().Before(end); n++ {
		if ask(t, long, "long") == "" {
			lost++
		}
		fresh := client(t, "", l.Address)
		if ask(t, fresh, "new") == "" {
			lost++
		}
		fresh.Close()
	}
	close(done)
	if err := <-churned; err != nil {
		t.Fatal(err)
	}
	if lost > 0 {
		t.Fatalf("%d of %d datagrams unanswered while members changed", lost, 2*n)
	}
}

// Rules removed from outside (`nft flush ruleset`) are put back by Repair.
func TestRepairPutsBackWhatWasRemoved(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	apply(t, tb, l)
	if repaired, err := tb.Repair(); err != nil || repaired {
		t.Fatalf("an intact table was repaired (%v, %v)", repaired, err)
	}
	removeTable(t, tb)
	if got := ask(t, client(t, "", l.Address), "x"); got != "" {
		t.Fatalf("answer from %q without the table", got)
	}
	if repaired, err := tb.Repair(); err != nil || !repaired {
		t.Fatalf("the table was not repaired (%v, %v)", repaired, err)
	}
	if got := ask(t, client(t, "", l.Address), "x"); got != "a" {
		t.Fatalf("answer from %q after the repair", got)
	}
	apply(t, tb, l) // the same input still changes nothing
	if got := ask(t, client(t, "", l.Address), "x"); got != "a" {
		t.Fatalf("answer from %q after an Apply that changes nothing", got)
	}
}

// removeTable deletes tb's table from outside, as `nft flush ruleset` would.
func removeTable(t *testing.T, tb *nat.Table) {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	conn.DelTable(&nftables.Table{Name: tb.Name(), Family: nftables.TableFamilyINet})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A repair puts back what the kernel still takes and names what it no longer does.
func TestRepairNamesAListenerTheKernelNoLongerTakes(t *testing.T) {
	tb := open(t)
	ls := echoListeners(t, "a", "b")
	a, b := ls[0], ls[1]
	apply(t, tb, a, b)
	removeTable(t, tb)
	nat.RefuseForTest(t, func(l nat.Listener) bool { return l.Key == b.Key })
	repaired, err := tb.Repair()
	if !repaired || !refusedAlone(err, b.Key) {
		t.Fatalf("repair with one listener the kernel refuses: (%v, %v), want it named alone", repaired, err)
	}
	if got := ask(t, client(t, "", a.Address), "x"); got != "a" {
		t.Fatalf("the listener the kernel takes answered by %q after the repair", got)
	}
}

// After Close nothing is programmed: a Repair racing with it must not bring the table back.
func TestClosedTableStaysClosed(t *testing.T) {
	tb := open(t)
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	apply(t, tb, l)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply([]nat.Listener{l}); err == nil {
		t.Fatal("a closed table took an Apply")
	}
	if repaired, err := tb.Repair(); repaired || err != nil {
		t.Fatalf("a closed table was repaired (%v, %v)", repaired, err)
	}
	if got := ask(t, client(t, "", l.Address), "x"); got != "" {
		t.Fatalf("a closed table still answers from %q", got)
	}
}

// A listener the kernel refuses keeps none of the others out of it, and costs their running
// flows nothing; once the kernel takes it, it is carried like the rest.
func TestAListenerTheKernelRefusesLeavesTheOthersCarried(t *testing.T) {
	tb := open(t)
	ls := echoListeners(t, "a", "b", "c")
	a, b, c := ls[0], ls[1], ls[2]
	apply(t, tb, a, b)
	running := client(t, "", a.Address)
	if got := ask(t, running, "x"); got != "a" {
		t.Fatalf("listener a answered by %q", got)
	}

	nat.RefuseForTest(t, func(l nat.Listener) bool { return l.Key == c.Key })
	b.Members = append(b.Members, nat.Member{Key: "b2", Address: udptest.Echo(t, "b2"), Weight: 1})
	if err := tb.Apply([]nat.Listener{a, b, c}); !refusedAlone(err, c.Key) {
		t.Fatalf("Apply with one listener the kernel refuses: %v, want it named alone", err)
	}
	if got := ask(t, running, "y"); got != "a" {
		t.Fatalf("a running flow of another listener answered by %q after the refusal", got)
	}
	seen := map[string]bool{}
	for range 4 {
		seen[ask(t, client(t, "", b.Address), "x")] = true
	}
	if !seen["b"] || !seen["b2"] {
		t.Fatalf("the listener changed with the refused one serves %v, want b and b2", seen)
	}
	if got := ask(t, client(t, "", c.Address), "x"); got != "" {
		t.Fatalf("the refused listener answered by %q", got)
	}

	nat.RefuseForTest(t, func(nat.Listener) bool { return false })
	apply(t, tb, a, b, c)
	if got := ask(t, client(t, "", c.Address), "x"); got != "c" {
		t.Fatalf("listener c, taken on the next Apply, answered by %q", got)
	}
	if got := ask(t, running, "z"); got != "a" {
		t.Fatalf("the running flow answered by %q", got)
	}
}

// Instances sharing a network namespace each claim a table and a tag of their own: closing
// one ends none of the other's flows, and its tag comes free for the next.
func TestClaimedTablesLeaveEachOtherAlone(t *testing.T) {
	dir := t.TempDir()
	claim := func() *nat.Table {
		t.Helper()
		tb, err := nat.OpenClaimed(dir, "l4lb-test", 0xf0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tb.Close() })
		return tb
	}
	one, two := claim(), claim()
	if one.Name() == two.Name() {
		t.Fatalf("two instances both claimed %s", one.Name())
	}
	ls := echoListeners(t, "a", "b")
	a, b := ls[0], ls[1]
	apply(t, one, a)
	apply(t, two, b)
	running := client(t, "", b.Address)
	if got, other := ask(t, client(t, "", a.Address), "x"), ask(t, running, "x"); got != "a" || other != "b" {
		t.Fatalf("the two instances' listeners answered by %q and %q", got, other)
	}
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, running, "y"); got != "b" {
		t.Fatalf("closing one instance's table: the other's running flow answered by %q", got)
	}
	if three := claim(); three.Name() != one.Name() {
		t.Fatalf("the next instance claimed %s, not the freed %s", three.Name(), one.Name())
	}
}

// A listener the SYN proxy fronts goes, and the table with it, in one Apply: what its rules
// name (the set of flooded listeners, its counters) goes after them, or the kernel refuses
// the transaction as busy.
func TestASynProxiedListenerGoesWithTheTable(t *testing.T) {
	tb := open(t)
	if !tb.SynCookies() {
		t.Fatal("this kernel has the SYN proxy (nft_synproxy), but the table did not find it")
	}
	l := synProxied(t)
	apply(t, tb, l)
	if err := tb.Flood([]string{l.Key}); err != nil {
		t.Fatal(err)
	}
	apply(t, tb)
	apply(t, tb, l)
}

// Flooding a listener again renews its time: the kernel leaves an element added twice with
// the time it had.
func TestFloodRenewsAListenersTime(t *testing.T) {
	tb := open(t)
	l := synProxied(t)
	apply(t, tb, l)
	expires := func() time.Duration {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: tb.Name(), Family: nftables.TableFamilyINet},
			Name: "flooded", KeyType: nftables.TypeInteger})
		if err != nil || len(elems) != 1 {
			t.Fatalf("flooded listeners: %v, %v; want one", elems, err)
		}
		return elems[0].Expires
	}
	for range 2 {
		if err := tb.Flood([]string{l.Key}); err != nil {
			t.Fatal(err)
		}
		if got := expires(); got < 59*time.Second {
			t.Fatalf("the listener's flood expires in %v; want a minute, renewed", got)
		}
		time.Sleep(1100 * time.Millisecond)
	}
}

// A kernel without the SYN proxy (nft_synproxy) carries the listeners without SYN cookies,
// rather than refuse them to the proxy.
func TestNoSynProxyInTheKernelLeavesListenersCarried(t *testing.T) {
	nat.RefuseSynproxyForTest(t)
	tb := open(t)
	if tb.SynCookies() {
		t.Fatal("a table found the SYN proxy in a kernel that refuses it")
	}
	l := synProxied(t)
	apply(t, tb, l)
	if err := tb.Flood([]string{l.Key}); err != nil {
		t.Fatal(err)
	}
}

// synProxied is a TCP listener the SYN proxy may front, with one member.
func synProxied(t *testing.T) nat.Listener {
	l := listener(t, model.RoundRobin, nat.Member{Key: "a", Address: udptest.Echo(t, "a"), Weight: 1})
	l.Protocol, l.SynProxy = model.TCP, true
	return l
}
