package vip

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/lantest"
	"github.com/mdlayher/ndp"
)

// TestKernelSilentAgentAnswers proves, on two hosts (network namespaces joined by a veth),
// that a VIP made local by Local is answered on the LAN by the agent alone: the kernel, told
// by the guard, does not answer for it, so when the agent is gone (its responder closed, the
// guard and the address left behind as after SIGKILL) nobody answers; a new Local adopts the
// address, and a Sync without it removes it. The same for an IPv6 VIP and neighbour
// solicitations, which Linux answers only for the addresses of the interface asked.
func TestKernelSilentAgentAnswers(t *testing.T) {
	a, b := lan(t)
	vip := netip.MustParseAddr("198.51.100.100")
	who := func() []string { return whoHas(t, b, vip) }

	var l *Local
	if err := lantest.In(a, func() (err error) {
		l, err = New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if errs := l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := who(); len(got) != 1 {
		t.Fatalf("the holder answers ARP for its VIP with %d replies, want 1 (the agent's)", len(got))
	}
	// Let go ahead of the rest of a change (Unanswer): nobody answers, the address stays.
	if stopped := l.Unanswer(nil); !stopped || !l.added[vip] {
		t.Fatalf("Unanswer: stopped %v, the address still local %v; want true, true", stopped, l.added[vip])
	}
	if got := who(); len(got) != 0 {
		t.Fatalf("a VIP let go by Unanswer is answered by %v", got)
	}
	if l.Unanswer(nil) {
		t.Fatal("Unanswer reports a VIP stopped twice")
	}
	// Unanswered but local (lingering): nobody answers.
	lantest.In(a, func() error { l.Sync(map[netip.Addr]bool{vip: true}, nil); return nil })
	if got := who(); len(got) != 0 {
		t.Fatalf("a lingering VIP is answered by %v", got)
	}
	// The agent dies: its responder goes with it, the address and the guard stay.
	lantest.In(a, func() error { l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); return nil })
	for _, r := range l.responders {
		r.close()
	}
	if got := who(); len(got) != 0 {
		t.Fatalf("after the agent died the node still answers for the VIP: %v", got)
	}
	// IPv6: the kernel answers solicitations only for the interface's own addresses, so a VIP
	// on lo is answered by the agent alone, and by nobody once it let go.
	vip6 := netip.MustParseAddr("2001:db8::100")
	solicit := func() int {
		t.Helper()
		n := 0
		if err := lantest.In(b, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
			if err != nil {
				return err
			}
			defer c.Close()
			group, _ := ndp.SolicitedNodeMulticast(vip6)
			ns := &ndp.NeighborSolicitation{TargetAddress: vip6, Options: []ndp.Option{
				&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
			if err := c.WriteTo(ns, nil, group.WithZone("eth0")); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				m, _, _, err := c.ReadFrom()
				if err != nil {
					return nil
				}
				if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == vip6 {
					n++
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var l6 *Local // the next agent, which adopts the IPv4 VIP the dead one left
	if err := lantest.In(a, func() (err error) {
		l6, err = New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if !l6.added[vip] {
			return fmt.Errorf("the restarted agent did not adopt %s: %v", vip, l6.added)
		}
		if errs := l6.Sync(map[netip.Addr]bool{vip: true, vip6: true}, map[netip.Addr]bool{vip6: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := solicit(); n != 1 {
		t.Fatalf("%d advertisements for the IPv6 VIP, want 1 (the agent's)", n)
	}
	lantest.In(a, func() error { l6.Sync(map[netip.Addr]bool{vip: true, vip6: true}, nil); return nil })
	if n := solicit(); n != 0 {
		t.Fatalf("%d advertisements for an IPv6 VIP the agent no longer answers for", n)
	}

	// A new agent adopts the addresses, then lets them go.
	if err := lantest.In(a, func() error {
		l2, err := New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if !l2.added[vip] || !l2.added[vip6] {
			return fmt.Errorf("the restarted agent did not adopt %s and %s: %v", vip, vip6, l2.added)
		}
		l2.Sync(nil, nil)
		if IsLocal(vip) || IsLocal(vip6) {
			return fmt.Errorf("%s still local after the new agent released it", vip)
		}
		return l2.Close()
	}); err != nil {
		t.Fatal(err)
	}
}

// lan makes two hosts, a (198.51.100.1, 2001:db8::1) and b (.2, ::2), network namespaces joined
// by a veth, and returns their names.
func lan(t testing.TB) (a, b string) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	a, b = fmt.Sprintf("l4v%d-a", os.Getpid()), fmt.Sprintf("l4v%d-b", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", a).Run(); exec.Command("ip", "netns", "del", b).Run() })
	run("ip", "netns", "add", a)
	run("ip", "netns", "add", b)
	run("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	run("ip", "-n", a, "addr", "add", "198.51.100.1/24", "dev", "eth0")
	run("ip", "-n", b, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	run("ip", "-n", a, "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
	run("ip", "-n", b, "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	for _, ns := range []string{a, b} {
		// Link-local addresses usable at once (no duplicate address detection), for NDP.
		run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
		run("ip", "-n", ns, "link", "set", "eth0", "up")
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	for _, ns := range []string{a, b} {
		if err := lantest.WaitLinkLocal(ns, "eth0", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// whoHas asks from host b who has vip and returns the MACs that answered.
func whoHas(t *testing.T, b string, vip netip.Addr) []string {
	t.Helper()
	macs, err := lantest.WhoHas(b, "eth0", vip.String(), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return macs
}

// TestReleasedVIPAnsweredUntilAdopted proves the hand-off of a VIP while the agent restarts:
// after Release the address stays and the kernel answers for it (the agent is gone); a new
// agent adopts it as handed off, and once it answers, the kernel is silent again, so a crash
// from there leaves nobody answering, as for any other VIP.
func TestReleasedVIPAnsweredUntilAdopted(t *testing.T) {
	a, b := lan(t)
	vip := netip.MustParseAddr("198.51.100.101")
	var l *Local
	if err := lantest.In(a, func() (err error) {
		if l, err = New(Config{Interface: "lo"}); err != nil {
			return err
		}
		if errs := l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		if err := l.Release(time.Minute); err != nil {
			return err
		}
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if got := whoHas(t, b, vip); len(got) != 1 {
		t.Fatalf("a released VIP is answered by %v, want the kernel alone", got)
	}
	var next *Local
	if err := lantest.In(a, func() (err error) {
		if next, err = New(Config{Interface: "lo"}); err != nil {
			return err
		}
		if got := next.HandedOff(); len(got) != 1 || got[0] != vip {
			return fmt.Errorf("the next agent finds %v handed off, want %s", got, vip)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := whoHas(t, b, vip); len(got) != 1 {
		t.Fatalf("a handed-off VIP not yet answered by the next agent is answered by %v, want the kernel", got)
	}
	if err := lantest.In(a, func() error {
		if errs := next.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		if got := next.HandedOff(); len(got) != 0 {
			return fmt.Errorf("still handed off after the agent answers: %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range next.responders { // the agent dies
		r.close()
	}
	if got := whoHas(t, b, vip); len(got) != 0 {
		t.Fatalf("after the next agent died the kernel answers for the VIP again: %v", got)
	}
	lantest.In(a, func() error { next.Sync(nil, nil); return next.Close() })
}

// A hand-off has an end: with no agent to answer for a released VIP within the limit, the
// kernel goes silent for it by itself (another node may take it), and an agent that starts
// meanwhile and dies before answering (a crash loop) does not extend it.
func TestAHandOffEndsByItself(t *testing.T) {
	a, b := lan(t)
	vip := netip.MustParseAddr("198.51.100.101")
	const limit = 2 * time.Second
	var released time.Time
	if err := lantest.In(a, func() error {
		l, err := New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if errs := l.Sync(map[netip.Addr]bool{vip: true}, map[netip.Addr]bool{vip: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		if err := l.Release(limit); err != nil {
			return err
		}
		released = time.Now()
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if got := whoHas(t, b, vip); len(got) != 1 {
		t.Fatalf("a released VIP is answered by %v, want the kernel alone", got)
	}
	// The next agent starts and dies before it answers.
	if err := lantest.In(a, func() error {
		next, err := New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if got := next.HandedOff(); len(got) != 1 {
			return fmt.Errorf("the next agent finds %v handed off, want %s", got, vip)
		}
		for _, r := range next.responders {
			r.close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(released.Add(limit + 500*time.Millisecond)))
	if got := whoHas(t, b, vip); len(got) != 0 {
		t.Fatalf("%v after the release, past its limit (%v), the VIP is still answered by %v", time.Since(released).Round(time.Millisecond), limit, got)
	}
	// Whoever comes next finds nothing handed off: it decides afresh, and cleans up.
	if err := lantest.In(a, func() error {
		next, err := New(Config{Interface: "lo"})
		if err != nil {
			return err
		}
		if got := next.HandedOff(); len(got) != 0 {
			return fmt.Errorf("past the limit, an agent finds %v handed off, want none", got)
		}
		next.Sync(nil, nil)
		return next.Close()
	}); err != nil {
		t.Fatal(err)
	}
}

// `nft flush ruleset` (Debian's stock /etc/nftables.conf begins with it) removes the guard:
// RepairGuard puts it back with the addresses it held, and the kernel is silent for the VIP
// again.
func TestTheGuardComesBackAfterAFlush(t *testing.T) {
	a, b := lan(t)
	vip := netip.MustParseAddr("198.51.100.101")
	var l *Local
	if err := lantest.In(a, func() (err error) {
		if l, err = New(Config{Interface: "lo"}); err != nil {
			return err
		}
		l.Sync(map[netip.Addr]bool{vip: true}, nil) // lingering: local, unanswered
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lantest.In(a, l.Close) })
	if got := whoHas(t, b, vip); len(got) != 0 {
		t.Fatalf("a guarded, lingering VIP is answered by %v", got)
	}
	if err := lantest.FlushRuleset(a); err != nil {
		t.Fatalf("flushing the ruleset: %v", err)
	}
	if got := whoHas(t, b, vip); len(got) != 1 {
		t.Fatalf("after the flush the kernel should answer (the fault repaired next): %v", got)
	}
	var repaired, again bool
	if err := lantest.In(a, func() (err error) {
		if repaired, err = l.RepairGuard(); err != nil {
			return err
		}
		again, err = l.RepairGuard()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !repaired || again {
		t.Fatalf("RepairGuard after the flush: %v, then %v; want true, then false", repaired, again)
	}
	if got := whoHas(t, b, vip); len(got) != 0 {
		t.Fatalf("after the repair the kernel still answers for the VIP: %v", got)
	}
}

// A neighbour that already knows the VIP's MAC checks it is still there with a unicast
// solicitation to the VIP itself (neighbour unreachability detection, RFC 4861 7.3): the agent
// answers it, so the neighbour's entry goes back to REACHABLE instead of cycling to FAILED
// and back through a multicast solicitation every time.
func TestUnicastSolicitationsAnswered(t *testing.T) {
	a, b := lan(t)
	vip6 := netip.MustParseAddr("2001:db8::100")
	var l *Local
	if err := lantest.In(a, func() (err error) {
		if l, err = New(Config{Interface: "lo", Announce: "eth0"}); err != nil {
			return err
		}
		if errs := l.Sync(map[netip.Addr]bool{vip6: true}, map[netip.Addr]bool{vip6: true}); len(errs) > 0 {
			return fmt.Errorf("%v", errs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lantest.In(a, func() error { l.Sync(nil, nil); return l.Close() }) })
	var mac string
	if err := lantest.In(a, func() error {
		ifi, err := net.InterfaceByName("eth0")
		mac = ifi.HardwareAddr.String()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sh := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", b}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// b's entry is stale, as after a while of no confirmation; the next packet to the VIP
	// makes b probe it by unicast, after delay_first_probe_time (1 s here, 5 by default).
	sh("sysctl", "-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=1")
	sh("ip", "-6", "neigh", "replace", vip6.String(), "lladdr", mac, "dev", "eth0", "nud", "stale")
	if err := lantest.In(b, func() error { // any packet to the VIP will do
		c, err := net.Dial("udp", netip.AddrPortFrom(vip6, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var state string
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		state = sh("ip", "-6", "neigh", "show", vip6.String(), "dev", "eth0")
		if strings.Contains(state, "REACHABLE") || strings.Contains(state, "FAILED") {
			break
		}
	}
	if !strings.Contains(state, "REACHABLE") {
		t.Fatalf("after unicast probes for the VIP the neighbour's entry is %q, want REACHABLE (the agent answers them)", strings.TrimSpace(state))
	}
}

// BenchmarkTakingManyVIPs: a node taking 1,000 VIPs at once (each made local, answered and
// announced on the LAN), then letting them go, as a takeover of a large node does. What each
// VIP costs must not grow with the VIPs already held: the interface holds every one of them.
func BenchmarkTakingManyVIPs(b *testing.B) {
	a, _ := lan(b)
	var l *Local
	if err := lantest.In(a, func() (err error) { l, err = New(Config{Interface: "lo", Announce: "eth0"}); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lantest.In(a, l.Close) })
	vips := map[netip.Addr]bool{}
	for i := range 1000 {
		vips[netip.AddrFrom4([4]byte{10, 200, byte(i / 250), byte(1 + i%250)})] = true
	}
	for b.Loop() {
		if err := lantest.In(a, func() error {
			if errs := l.Sync(vips, vips); len(errs) > 0 {
				return fmt.Errorf("%d VIPs not taken: %v", len(errs), errs)
			}
			l.Sync(nil, nil)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
