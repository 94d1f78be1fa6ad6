package nodes

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// countingTransport is memberlist's own UDP and TCP transport, counting what it sends.
type countingTransport struct {
	*memberlist.NetTransport
	sent *atomic.Int64
}

func (c countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	c.sent.Add(int64(len(b)))
	return c.NetTransport.WriteToAddress(b, addr)
}

func (c countingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := c.NetTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return countingConn{conn, c.sent}, nil
}

type countingConn struct {
	net.Conn
	sent *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.sent.Add(int64(len(b)))
	return c.Conn.Write(b)
}

// cuttableTransport fails every stream (TCP) it is asked to open while cut is set, as a
// partition that still lets the UDP probes through would.
type cuttableTransport struct {
	*memberlist.NetTransport
	cut *atomic.Bool
}

func (c cuttableTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("cut by the test")}
	}
	return c.NetTransport.DialAddressTimeout(addr, timeout)
}

// startMembers starts n gossiping members on loopback with the given timing (and a key, as
// the chart gives), each joined to the one before; sent counts every byte they send.
func startMembers(t testing.TB, n int, timing Timing, sent *atomic.Int64) []*Gossip {
	key := []byte("0123456789abcdef0123456789abcdef")
	var gs []*Gossip
	for i := range n {
		tr, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
		if err != nil {
			t.Fatal(err)
		}
		g, err := StartGossip(GossipConfig{Node: fmt.Sprintf("node-%03d", i), Address: "127.0.0.1", Port: tr.GetAutoBindPort(),
			Key: key, Timing: timing, Log: logr.Discard(), Transport: countingTransport{tr, sent}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Shutdown)
		if i > 0 {
			if _, err := g.Join([]string{HostPort("127.0.0.1", int(gs[i-1].ml.LocalNode().Port))}); err != nil {
				t.Fatal(err)
			}
		}
		gs = append(gs, g)
	}
	return gs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestGossipDeathQuorumAndMeta runs three members: one that dies silently is dropped by the
// others, who stay quorate (two of three), while a member that lost both others is not; a
// member's Meta (draining, unfit) reaches the others; a clean leave shrinks the quorum's base.
func TestGossipDeathQuorumAndMeta(t *testing.T) {
	var sent atomic.Int64
	gs := startMembers(t, 3, DefaultTiming, &sent)
	waitFor(t, "all three see each other", func() bool {
		return len(gs[0].View().Alive) == 3 && len(gs[1].View().Alive) == 3 && len(gs[2].View().Alive) == 3
	})
	gs[1].SetMeta(Meta{Draining: true})
	waitFor(t, "node-001's draining reaches node-000", func() bool { return gs[0].View().Draining["node-001"] })
	gs[1].SetMeta(Meta{Unfit: true})
	waitFor(t, "node-001's unfitness reaches node-002", func() bool {
		v := gs[2].View()
		return v.Unfit["node-001"] && !slices.Contains(v.Eligible(), "node-001")
	})

	gs[2].Shutdown() // dies without a word
	waitFor(t, "node-002's death is noticed", func() bool { return len(gs[0].View().Alive) == 2 })
	v := gs[0].View()
	if v.Known != 3 || !v.Quorate(func([]string) bool { return false }) {
		t.Fatalf("two of three alive: known %d, quorate %v; want 3, true", v.Known, v.Quorate(nil))
	}
	gs[1].Shutdown()
	waitFor(t, "node-001's death is noticed", func() bool { return len(gs[0].View().Alive) == 1 })
	if v := gs[0].View(); v.Quorate(func([]string) bool { return true }) {
		t.Fatal("one of three alive is quorate: a cut-off holder would keep its VIPs")
	}
	// The API server says node-002 is gone for good: one of two, the witness decides.
	gs[0].Forget("node-002")
	v = gs[0].View()
	if v.Known != 2 || !v.Quorate(func([]string) bool { return true }) || v.Quorate(func([]string) bool { return false }) {
		t.Fatalf("one of two known: known %d; the witness must decide", v.Known)
	}
}

func TestQuorate(t *testing.T) {
	yes, no := func([]string) bool { return true }, func([]string) bool { return false }
	for _, c := range []struct {
		alive, known int
		tie          func([]string) bool
		want         bool
	}{
		{1, 1, no, true},   // a single node keeps its VIPs
		{1, 2, yes, true},  // the survivor of two that won the tie
		{1, 2, no, false},  // the one that lost it
		{1, 2, nil, true},  // nothing decides ties: a tie keeps the VIPs
		{2, 3, no, true},   // the majority, whatever the tie-break says
		{1, 3, yes, false}, // the cut-off holder, likewise
		{2, 4, yes, true},
		{2, 4, no, false},
	} {
		v := View{Alive: make([]string, c.alive), Known: c.known}
		if got := v.Quorate(c.tie); got != c.want {
			t.Errorf("%d of %d alive (tie won %v): quorate %v, want %v", c.alive, c.known, c.tie != nil && c.tie(nil), got, c.want)
		}
	}
}

// BenchmarkGossip100Members measures what gossip costs each node: 100 members in one process,
// on loopback, probing every DefaultTiming.Probe as the agents do, for the benchmark's time
// (-benchtime 10x: 10 s). It reports bytes sent per node per second. What a node sends
// depends on how often it probes and gossips, not on how long it waits for an answer: the
// probe timeout is raised here, because 100 members sharing this machine's two cores answer
// far slower than 100 machines would, and false deaths would add traffic no real cluster has.
func BenchmarkGossip100Members(b *testing.B) {
	members := 100
	if n, err := strconv.Atoi(os.Getenv("L4LB_GOSSIP_MEMBERS")); err == nil {
		members = n
	}
	var sent atomic.Int64
	timing := DefaultTiming
	timing.ProbeTimeout = 90 * time.Millisecond
	timing.Suspicion = 30
	gs := startMembers(b, members, timing, &sent)
	for end := time.Now().Add(60 * time.Second); len(gs[members-1].View().Alive) < members; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			b.Fatalf("only %d of 100 members met", len(gs[99].View().Alive))
		}
	}
	time.Sleep(5 * time.Second) // the joins' state exchanges settle
	b.ResetTimer()
	start := sent.Load()
	t0 := time.Now()
	for range b.N {
		time.Sleep(time.Second)
	}
	secs := time.Since(t0).Seconds()
	b.ReportMetric(float64(sent.Load()-start)/float64(members)/secs, "bytes/node/s")
	b.ReportMetric(float64(len(gs[members/2].View().Alive)), "alive-in-view")
}

// TestClaimsReachEveryNode: what a node says it answers for reaches the others at once, a
// node that joins later hears every claim before it can take anything, and a node that comes
// back from the dead is unheard until it speaks again.
func TestClaimsReachEveryNode(t *testing.T) {
	var sent atomic.Int64
	gs := startMembers(t, 3, DefaultTiming, &sent)
	waitFor(t, "all three see each other and are heard", func() bool {
		for _, g := range gs {
			if v := g.View(); len(v.Alive) != 3 || len(v.Unheard) != 0 {
				return false
			}
		}
		return true
	})
	gs[0].SetClaim([]string{"198.51.100.7", "2001:db8::7"})
	waitFor(t, "node-000's claim reaches the others", func() bool {
		return slices.Equal(gs[1].View().ClaimedBy("198.51.100.7"), []string{"node-000"}) &&
			slices.Equal(gs[2].View().ClaimedBy("2001:db8::7"), []string{"node-000"})
	})
	gs[0].SetClaim(nil) // let go: the acknowledgement a taker waits for
	waitFor(t, "node-000's release reaches the others", func() bool {
		return len(gs[1].View().ClaimedBy("198.51.100.7")) == 0 && len(gs[2].View().ClaimedBy("198.51.100.7")) == 0
	})
	gs[1].SetClaim([]string{"198.51.100.8"})
	// A fourth node, joined to node-002 only, hears node-001's claim too.
	late, err := StartGossip(GossipConfig{Node: "late", Address: "127.0.0.1", Port: 0,
		Key: []byte("0123456789abcdef0123456789abcdef"), Timing: DefaultTiming, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(late.Shutdown)
	if _, err := late.Join([]string{HostPort("127.0.0.1", int(gs[2].ml.LocalNode().Port))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the late node hears node-001's claim", func() bool {
		v := late.View()
		return len(v.Alive) == 4 && len(v.Unheard) == 0 && slices.Equal(v.ClaimedBy("198.51.100.8"), []string{"node-001"})
	})
}

// TestAClaimIsDeliveredOnceThePathHeals: a claim sent while the stream to a node could not be
// opened still reaches it when the path comes back, without push-pull (turned off here): a
// node that missed it would otherwise wait on this node (unheard) or believe a VIP is still
// held here.
func TestAClaimIsDeliveredOnceThePathHeals(t *testing.T) {
	var cut atomic.Bool
	key := []byte("0123456789abcdef0123456789abcdef")
	var gs []*Gossip
	for i := range 2 {
		tr, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
		if err != nil {
			t.Fatal(err)
		}
		g, err := StartGossip(GossipConfig{Node: fmt.Sprintf("node-%03d", i), Address: "127.0.0.1", Port: tr.GetAutoBindPort(),
			Key: key, Timing: DefaultTiming, Log: logr.Discard(), Transport: cuttableTransport{tr, &cut}, noPushPull: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Shutdown)
		gs = append(gs, g)
	}
	if _, err := gs[1].Join([]string{gs[0].Address()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both see each other and are heard", func() bool {
		v0, v1 := gs[0].View(), gs[1].View()
		return len(v0.Alive) == 2 && len(v0.Unheard) == 0 && len(v1.Alive) == 2 && len(v1.Unheard) == 0
	})
	cut.Store(true)
	gs[0].SetClaim([]string{"198.51.100.7"})
	time.Sleep(300 * time.Millisecond) // the first tries fail
	if got := gs[1].View().ClaimedBy("198.51.100.7"); len(got) != 0 {
		t.Fatalf("the claim went through a cut path: %v", got)
	}
	cut.Store(false)
	waitFor(t, "node-000's claim reaches node-001 once the path is back", func() bool {
		return slices.Equal(gs[1].View().ClaimedBy("198.51.100.7"), []string{"node-000"})
	})
}

// TestViewWhileNodesComeAndGo asks for the view without pause while another node leaves and
// comes back, again and again. Memberlist tells of a node coming or going with its node lock
// held; a View that held its own lock while asking memberlist for the members deadlocked
// against it (an agent hung that way after a partition healed, found by the partition matrix).
func TestViewWhileNodesComeAndGo(t *testing.T) {
	var sent atomic.Int64
	gs := startMembers(t, 2, DefaultTiming, &sent)
	stop := make(chan struct{})
	var views atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				gs[0].View()
				views.Add(1)
			}
		}
	}()
	defer close(stop)
	addr := gs[0].Address()
	go func() { // a node leaves and comes back, again and again (Leave itself may hang on a deadlock)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			g, err := StartGossip(GossipConfig{Node: fmt.Sprintf("flapper-%d", i%2), Address: "127.0.0.1", Port: 0,
				Key: []byte("0123456789abcdef0123456789abcdef"), Timing: DefaultTiming, Log: logr.Discard()})
			if err != nil {
				continue
			}
			g.Join([]string{addr})
			time.Sleep(20 * time.Millisecond)
			g.Leave(100 * time.Millisecond)
		}
	}()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		before := views.Load()
		deadline := time.Now().Add(10 * time.Second)
		for views.Load() == before {
			if time.Now().After(deadline) {
				t.Fatal("View has not returned for 10 s: deadlocked against memberlist")
			}
			time.Sleep(time.Millisecond)
		}
	}
}
