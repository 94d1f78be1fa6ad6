package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/internal/manager"
)

// These tests drive Ownership.step with a gossip view and a clock of their own: the rules of
// who holds, who stands by, when a hand-over completes and how long a released VIP lingers.

type fakePeers struct {
	view  nodes.View
	meta  nodes.Meta
	node  string
	board map[string][]string // what each node claims, shared by the nodes of a test
}

// View is the set view, with the claims of the other alive nodes on the board.
func (f *fakePeers) View() nodes.View {
	v := f.view
	v.Claimers = map[string][]string{}
	for _, n := range slices.Sorted(slices.Values(v.Alive)) {
		if n != f.node {
			for _, vip := range f.board[n] {
				v.Claimers[vip] = append(v.Claimers[vip], n)
			}
		}
	}
	return v
}
func (f *fakePeers) SetClaim(vips []string) {
	if f.board != nil {
		f.board[f.node] = vips
	}
}
func (f *fakePeers) Meta() nodes.Meta           { return f.meta }
func (f *fakePeers) SetMeta(m nodes.Meta) error { f.meta = m; return nil }
func (f *fakePeers) Join([]string) (int, error) { return 0, nil }
func (f *fakePeers) Forget(string)              {}
func (f *fakePeers) SetListed([]string)         {}
func view(known int, alive ...string) nodes.View {
	return nodes.View{Alive: alive, Known: known, Draining: map[string]bool{}, Unfit: map[string]bool{}}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// loadBalancers is a cache holding load balancers with the given VIPs, named lb-<VIP>.
func loadBalancers(t *testing.T, vips ...string) client.Reader {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(manager.NewScheme())
	for _, v := range vips {
		b = b.WithObjects(&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lb-" + v},
			Status: lbv1.LoadBalancerStatus{VIPAddress: v}})
	}
	return b.Build()
}

func newTestOwnership(node string, peers *fakePeers, r client.Reader, c *clock) *Ownership {
	o := NewOwnership(node, peers, nil, r, nil)
	o.Now = c.now
	o.joined.Store(true)
	// The nodes of the view have been there a while (TestANodeComingBackSettlesFirst: not).
	o.lastArrival = c.t.Add(-arrivalSettle)
	o.seen = map[string]bool{}
	for _, n := range peers.view.Alive {
		o.seen[n] = true
	}
	return o
}

func step(o *Ownership) bool { return o.step(context.Background(), logr.Discard()) != unchanged }

// cluster is nodes sharing one claims board, each seeing the view live.
func cluster(t *testing.T, r client.Reader, c *clock, live ...string) map[string]*Ownership {
	board := map[string][]string{}
	out := map[string]*Ownership{}
	for _, n := range live {
		out[n] = newTestOwnership(n, &fakePeers{view: view(len(live), live...), node: n, board: board}, r, c)
	}
	return out
}

// answer does what the agent does after a step: it answers for what the node holds, and
// says so (the claim the others read).
func answer(o *Ownership) {
	var vips []string
	for k := range o.Held() {
		vips = append(vips, strings.TrimPrefix(k, "ns/lb-"))
	}
	o.Gossip.SetClaim(vips)
}

// settle steps and reconciles every node until nothing changes.
func settle(os map[string]*Ownership) {
	for range 5 {
		for _, o := range os {
			step(o)
			answer(o)
		}
	}
}

// vipRanked finds a VIP whose ranking over nodes is exactly want (first holds, second stands by).
func vipRanked(t *testing.T, live []string, want ...string) string {
	t.Helper()
	for i := 1; i < 250; i++ {
		v := fmt.Sprintf("198.51.100.%d", i)
		order := nodes.Ranked(v, live, nil)
		if len(order) >= len(want) && fmt.Sprint(order[:len(want)]) == fmt.Sprint(want) {
			return v
		}
	}
	t.Fatalf("no VIP ranks %v first over %v", want, live)
	return ""
}

func TestEachVIPHasOneHolderAndOneStandby(t *testing.T) {
	live := []string{"a", "b", "c"}
	var vips []string
	for i := 1; i <= 30; i++ {
		vips = append(vips, fmt.Sprintf("198.51.100.%d", i))
	}
	r := loadBalancers(t, vips...)
	c := &clock{t: time.Unix(1000, 0)}
	owners := cluster(t, r, c, live...)
	settle(owners)
	for _, v := range vips {
		k := "ns/lb-" + v
		var holders, standbys []string
		for n, o := range owners {
			if o.Held()[k] {
				holders = append(holders, n)
			}
			if o.Serving()[k] && !o.Held()[k] {
				standbys = append(standbys, n)
			}
		}
		if len(holders) != 1 || len(standbys) != 1 || holders[0] == standbys[0] {
			t.Fatalf("%s: holders %v, standbys %v; want one of each, on two nodes", v, holders, standbys)
		}
		if want := nodes.Ranked(v, live, nil); holders[0] != want[0] || standbys[0] != want[1] {
			t.Fatalf("%s: held by %s, standby %s; the ranking says %v", v, holders[0], standbys[0], want)
		}
	}
}

func TestNoQuorumOrNotJoinedHoldsNothing(t *testing.T) {
	v := vipRanked(t, []string{"a", "b", "c"}, "a")
	r := loadBalancers(t, v)
	c := &clock{t: time.Unix(1000, 0)}
	alone := newTestOwnership("a", &fakePeers{view: view(3, "a")}, r, c) // one of three
	unjoined := newTestOwnership("a", &fakePeers{view: view(1, "a")}, r, c)
	unjoined.joined.Store(false)
	for range 3 {
		step(alone)
		step(unjoined)
		c.advance(time.Second)
	}
	if len(alone.Serving()) != 0 {
		t.Fatalf("a node that sees one of three nodes serves %v", alone.Serving())
	}
	if len(unjoined.Serving()) != 0 {
		t.Fatalf("a node that has not joined serves %v", unjoined.Serving())
	}
}

// A VIP stays with a healthy holder when a better-ranked node comes back (no failback that
// resets its connections); with Preemptive it moves back, but only once the holder's claim
// says it let go (an acknowledged hand-over).
func TestAHealthyHolderKeepsItsVIP(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a", "b")
	k := "ns/lb-" + v
	for _, preemptive := range []bool{false, true} {
		t.Run(fmt.Sprintf("preemptive=%v", preemptive), func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			os := cluster(t, loadBalancers(t, v), c, live...)
			for _, o := range os {
				o.Preemptive = preemptive
				o.Gossip.(*fakePeers).view.Unfit["a"] = true // b holds while a is unfit
			}
			settle(os)
			a, b := os["a"], os["b"]
			if a.Held()[k] || !b.Held()[k] {
				t.Fatalf("while a is unfit: a holds %v, b holds %v; want b", a.Held(), b.Held())
			}
			for _, o := range os {
				o.Gossip.(*fakePeers).view.Unfit = map[string]bool{} // a is back
			}
			step(a)
			if a.Held()[k] || !a.Serving()[k] {
				t.Fatalf("a took the VIP b still answers for (held %v, serving %v)", a.Held(), a.Serving())
			}
			step(b)
			if b.Held()[k] == preemptive {
				t.Fatalf("preemptive %v: b holds %v after a came back", preemptive, b.Held())
			}
			step(a)
			if a.Held()[k] {
				t.Fatal("a took the VIP before b's claim said b let it go")
			}
			answer(b) // b stops answering, and says so
			step(a)
			if a.Held()[k] != preemptive {
				t.Fatalf("preemptive %v: once b's claim is current, a holds %v", preemptive, a.Held())
			}
		})
	}
}

// A node not heard since it came alive may hold VIPs (it was cut off): nobody takes a VIP by
// the ranking until it is heard.
func TestAnUnheardNodeHoldsUpTakeovers(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	p := &fakePeers{view: view(3, live...), node: "a", board: map[string][]string{}}
	p.view.Unheard = map[string]bool{"c": true}
	o := newTestOwnership("a", p, loadBalancers(t, v), c)
	step(o)
	if o.Held()[k] || !o.Serving()[k] {
		t.Fatalf("with c unheard: held %v, serving %v; want served, not held", o.Held(), o.Serving())
	}
	p.view.Unheard = nil
	step(o)
	if !o.Held()[k] {
		t.Fatal("not taken once every node was heard")
	}
}

// TestFailoverMovesTheVIPWithAHandOver: a failover names the holder; the next node takes the
// VIP once the holder's claim says it let go.
func TestFailoverMovesTheVIPWithAHandOver(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a", "b")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	r := loadBalancers(t, v)
	os := cluster(t, r, c, live...)
	settle(os)
	a, b := os["a"], os["b"]
	if !a.Held()[k] || b.Held()[k] {
		t.Fatalf("before the failover: a holds %v, b holds %v", a.Held(), b.Held())
	}
	var lb lbv1.LoadBalancer
	ctx := context.Background()
	if err := r.(client.Client).Get(ctx, client.ObjectKey{Namespace: "ns", Name: "lb-" + v}, &lb); err != nil {
		t.Fatal(err)
	}
	lb.Annotations = map[string]string{lbv1.FailoverAnnotation: "a"}
	if err := r.(client.Client).Update(ctx, &lb); err != nil {
		t.Fatal(err)
	}
	step(b)
	if b.Held()[k] {
		t.Fatal("the next node took the VIP before its holder let go")
	}
	step(a)
	if a.Held()[k] {
		t.Fatal("the holder a failover moves the VIP off still holds it")
	}
	step(b)
	if b.Held()[k] {
		t.Fatal("the next node took the VIP before the holder's claim said it let go")
	}
	answer(a)
	step(b)
	if !b.Held()[k] {
		t.Fatal("the next node did not take the VIP once the holder let go")
	}
}

func TestAReleasedVIPLingersThenGoes(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a", "b")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	p := &fakePeers{view: view(3, live...)}
	o := newTestOwnership("a", p, loadBalancers(t, v), c)
	step(o)
	if !o.Held()[k] {
		t.Fatal("not held")
	}
	p.view = view(3, live...)
	p.view.Unfit["a"] = true // a leaves the election
	if !step(o) {
		t.Fatal("a release was not reported as a change")
	}
	if o.Held()[k] || !o.Lingering()[k] || !o.Serving()[k] {
		t.Fatalf("after release: held %v, lingering %v, serving %v; want lingering and served", o.Held(), o.Lingering(), o.Serving())
	}
	c.advance(o.Linger)
	step(o)
	if !o.Lingering()[k] {
		t.Fatal("stopped lingering before its time")
	}
	c.advance(time.Millisecond)
	if !step(o) || o.Lingering()[k] || o.Serving()[k] {
		t.Fatalf("still lingering after %v", o.Linger)
	}
}

// A starting node tells the others it is unfit until it has joined and Fitness passes, so no
// VIP is handed to an agent that cannot hold it yet (its cache not synced, its engine not up).
func TestUnfitUntilJoinedAndFit(t *testing.T) {
	p := &fakePeers{view: view(1, "a"), meta: nodes.Meta{Unfit: true}}
	o := NewOwnership("a", p, nil, loadBalancers(t), nil)
	var broken error
	o.Fitness = func() error { return broken }
	o.checkFitness(logr.Discard())
	if !p.meta.Unfit {
		t.Fatal("a node that has not joined says it is fit")
	}
	o.joined.Store(true)
	o.checkFitness(logr.Discard())
	if p.meta.Unfit {
		t.Fatal("a joined, fit node says it is unfit")
	}
	broken = errors.New("VIP interface down")
	o.checkFitness(logr.Discard())
	if !p.meta.Unfit {
		t.Fatal("a node whose Fitness fails says it is fit")
	}
}

// A trafficPolicy Local load balancer is held only by a node running a member: not by the
// node that ranks first over all the live ones, and by nobody when no member takes traffic.
func TestALocalVIPIsHeldWhereItsMembersRun(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a", "b", "c")
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lb"},
		Spec: lbv1.LoadBalancerSpec{TrafficPolicy: lbv1.TrafficLocal}, Status: lbv1.LoadBalancerStatus{VIPAddress: v}}
	pool := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
		Spec: lbv1.PoolSpec{LoadBalancerRef: &lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
			Members: []lbv1.Member{{Name: "m", Address: "10.0.0.1", ProtocolPort: 80, NodeName: "c"},
				{Name: "drained", Address: "10.0.0.2", ProtocolPort: 80, NodeName: "b", Weight: new(int32)}}}}
	r := fake.NewClientBuilder().WithScheme(manager.NewScheme()).WithObjects(lb, pool).Build()
	peers := &fakePeers{view: view(3, live...)}
	holders := func() []string {
		var out []string
		for _, n := range live {
			c := &clock{t: time.Unix(1000, 0)}
			o := newTestOwnership(n, peers, r, c)
			step(o)
			step(o)
			if o.Held()["ns/lb"] {
				out = append(out, n)
			}
		}
		return out
	}
	if got := holders(); fmt.Sprint(got) != "[c]" {
		t.Fatalf("held by %v, want only c, the node of its one member taking traffic", got)
	}
	// Cluster: the first ranked, a.
	lb.Spec.TrafficPolicy = lbv1.TrafficCluster
	if err := r.(client.Client).Update(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
	if got := holders(); fmt.Sprint(got) != "[a]" {
		t.Fatalf("Cluster: held by %v, want a", got)
	}
	// Local with no member taking traffic: nobody.
	lb.Spec.TrafficPolicy = lbv1.TrafficLocal
	pool.Spec.Members = pool.Spec.Members[1:]
	for _, o := range []client.Object{lb, pool} {
		if err := r.(client.Client).Update(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	if got := holders(); len(got) != 0 {
		t.Fatalf("no member taking traffic: held by %v", got)
	}
}

// Two l4lb nodes that both hold a VIP (their views disagree: an agent that stalled, one-way
// loss) settle it on the wire: the one that ranks second for the VIP yields it when it hears
// the other's ARP, for yieldFor, and the first keeps it (the rule holders apply to each
// other's claims, so the two never disagree); a stranger's claim is defended, never yielded to.
func TestAConflictIsSettledByTheRanking(t *testing.T) {
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	// Each sees the other dead but a third node alive: both quorate, both first for v.
	v := vipRanked(t, []string{"a", "b", "c"}, "a", "b")
	r := loadBalancers(t, v)
	c := &clock{t: time.Unix(1000, 0)}
	macs := map[string]string{"a": string(macA), "b": string(macB)}
	va, vb := view(3, "a", "c"), view(3, "b", "c")
	va.MACs, vb.MACs = macs, macs
	a := newTestOwnership("a", &fakePeers{view: va}, r, c)
	pb := &fakePeers{view: vb}
	b := newTestOwnership("b", pb, r, c)
	for range 10 { // past any hand-over wait
		step(a)
		step(b)
		c.advance(100 * time.Millisecond)
	}
	k := "ns/lb-" + v
	if !a.Held()[k] || !b.Held()[k] {
		t.Fatalf("the test needs both to hold %s: a %v, b %v", k, a.Held(), b.Held())
	}
	// b sees a again, before their claims meet: both still hold.
	pb.view = view(3, "a", "b", "c")
	pb.view.MACs = macs
	vip := netip.MustParseAddr(v)
	if a.Conflict(vip, macA, macB, logr.Discard()) {
		t.Fatal("a, first for the VIP, yielded")
	}
	if !b.Conflict(vip, macB, macA, logr.Discard()) {
		t.Fatal("b, second for the VIP, did not yield")
	}
	step(a)
	step(b)
	if !a.Held()[k] || b.Held()[k] || !b.Serving()[k] {
		t.Fatalf("after the conflict a holds %v, b holds %v and serves %v; want a alone holding, b serving", a.Held(), b.Held(), b.Serving())
	}
	c.advance(yieldFor)
	step(b)
	if b.Held()[k] {
		t.Fatalf("after %v b took %s back, though a, first for it, is alive", yieldFor, k)
	}
	if a.Conflict(vip, macA, net.HardwareAddr{2, 0, 0, 0, 0, 0}, logr.Discard()) {
		t.Fatal("a yielded to a MAC no l4lb node has")
	}
}

// TestAYieldEndsWhenTheOtherGoesAway is the randomized run's case: b holds a VIP ranked a
// first; a is cut off and, as the cut forms, answers for it (seeing b gone before it sees it
// is alone), which makes b yield; a goes out of view, b holds again; when the cut heals and a
// comes back, having let the VIP go, b keeps it. Before, the yield (10 s) came back with a,
// and nobody answered for 2 s while a settled.
func TestAYieldEndsWhenTheOtherGoesAway(t *testing.T) {
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	macs := map[string]string{"a": string(macA), "b": string(macB)}
	v := vipRanked(t, []string{"a", "b", "c"}, "a", "b")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	pb := &fakePeers{}
	see := func(alive ...string) {
		pb.view = view(3, alive...)
		pb.view.MACs = macs
	}
	see("b", "c")
	b := newTestOwnership("b", pb, loadBalancers(t, v), c)
	for range 10 {
		step(b)
		c.advance(100 * time.Millisecond)
	}
	see("a", "b", "c") // a back long ago: b keeps the VIP (not preemptive)
	for range 30 {
		step(b)
		c.advance(100 * time.Millisecond)
	}
	if !b.Held()[k] {
		t.Fatalf("the test needs b to hold %s with a in view: %v", k, b.Held())
	}
	// The cut forms: a, first for the VIP, answers for it before it sees it is alone.
	if !b.Conflict(netip.MustParseAddr(v), macB, macA, logr.Discard()) {
		t.Fatal("b, second for the VIP, did not yield to a")
	}
	step(b)
	see("b", "c") // a's death is seen
	step(b)
	if !b.Held()[k] {
		t.Fatalf("with a out of view b does not hold %s", k)
	}
	c.advance(time.Second)
	see("a", "b", "c") // a back, claiming nothing
	step(b)
	if !b.Held()[k] {
		t.Fatalf("a came back without the VIP and b let %s go (yielding again to a)", k)
	}
}

// A holder that leaves the election lets its VIPs go at its next reconcile; one whose claim
// stays (its engine wedged) is waited for stuckAfter at most.
func TestAStuckHolderIsWaitedForABoundedTime(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, live, "a", "b")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	os := cluster(t, loadBalancers(t, v), c, live...)
	settle(os)
	a, b := os["a"], os["b"]
	if !a.Held()[k] {
		t.Fatalf("a holds %v", a.Held())
	}
	b.Gossip.(*fakePeers).view.Unfit["a"] = true // a leaves, but never reconciles again
	step(b)
	if b.Held()[k] {
		t.Fatal("b took the VIP while a still says it answers for it")
	}
	c.advance(stuckAfter)
	step(b)
	if b.Held()[k] {
		t.Fatal("b gave up waiting before stuckAfter")
	}
	c.advance(time.Millisecond)
	step(b)
	if !b.Held()[k] {
		t.Fatalf("b still waits for a after %v", stuckAfter)
	}
}

// A node that sees others come back (a partition healed) takes no VIP nobody it sees claims
// before arrivalSettle: the holder may come back into its view after the others, and taking
// the VIP meanwhile would make two answerers. A takeover from a dead node is not delayed.
func TestANodeComingBackSettlesFirst(t *testing.T) {
	live := []string{"a", "b", "c"}
	v := vipRanked(t, []string{"a", "b"}, "a")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	p := &fakePeers{view: view(3, "a"), node: "a", board: map[string][]string{}}
	o := newTestOwnership("a", p, loadBalancers(t, v), c)
	step(o)                    // cut off: one of three
	p.view = view(3, "a", "b") // b is back, c (which holds the VIP) not yet in view
	step(o)
	if o.Held()[k] {
		t.Fatal("took the VIP the moment quorum came back")
	}
	c.advance(arrivalSettle)
	p.view = view(3, live...)
	p.board["c"] = []string{v} // c is back in view, and says it holds it
	step(o)
	if o.Held()[k] {
		t.Fatalf("took the VIP c holds: %v", o.Held())
	}
}

// unreachable is an API server that does not answer (a node cut off from it).
type unreachable struct{ client.Reader }

func (unreachable) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("the API server does not answer")
}

// TestATieKeepsTheVIPWhereItIs is the partition matrix's 2|2 with both halves reaching the
// API server: a holds the VIP; as the cut forms, c sees a go first (a death, to c) and takes
// the VIP; then the tie begins everywhere, c's half first to ask for the tie-break Lease. a
// keeps answering while the tie's outcome is unknown, a's half wins (the node that has held a
// VIP for a while claims a free Lease first), and c lets the VIP go. Before, a let the VIP go
// at the tie's start, and whichever half asked first won: the VIP moved, its connections broke.
func TestATieKeepsTheVIPWhereItIs(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	v := vipRanked(t, all, "a", "c")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	api := fake.NewClientBuilder().WithScheme(manager.NewScheme()).Build()
	os := cluster(t, loadBalancers(t, v), c, all...)
	tieBreaks := func(api client.Client) {
		for n, o := range os {
			o.Tie = &nodes.TieBreak{Client: api, Reader: api, Namespace: "l4lb-system", Node: n, Now: c.now, AtOnce: o.ClaimsTieAtOnce}
		}
	}
	tieBreaks(api)
	settle(os)
	c.advance(2 * settledHold)
	if !os["a"].Held()[k] {
		t.Fatalf("the test needs a to hold %s: %v", k, os["a"].Held())
	}
	see := func(n string, alive ...string) { os[n].Gossip.(*fakePeers).view = view(4, alive...) }
	see("c", "b", "c", "d") // the cut forms: c sees a go first
	step(os["c"])
	if !os["c"].Held()[k] {
		t.Fatalf("the test needs c to take %s when a goes out of its view: %v", k, os["c"].Held())
	}
	c.advance(100 * time.Millisecond)
	see("a", "a", "b")
	see("b", "a", "b")
	see("c", "c", "d")
	see("d", "c", "d")
	for _, n := range all { // the tie begins everywhere
		step(os[n])
		if n == "a" && !os["a"].Held()[k] {
			t.Fatal("a let the VIP go at the start of the tie, before its outcome was known")
		}
	}
	ctx := context.Background()
	for i := range 4 {
		for _, n := range []string{"c", "d", "a", "b"} { // c's half asks the API server first
			os[n].Tie.Step(ctx)
		}
		c.advance(100 * time.Millisecond)
		settle(os)
		if !os["a"].Held()[k] || os["c"].Held()[k] {
			t.Fatalf("%d00 ms into the tie a holds %v, c holds %v; want the VIP kept on a alone", i+1, os["a"].Held(), os["c"].Held())
		}
	}

	// The same tie, a cut off from the API server: a keeps the VIP for undecidedFor at most.
	c.advance(time.Minute) // the first tie is long over
	tieBreaks(fake.NewClientBuilder().WithScheme(manager.NewScheme()).Build())
	os["a"].Tie.Reader = unreachable{}
	step(os["a"])
	if !os["a"].Held()[k] {
		t.Fatal("a let the VIP go at the start of the second tie")
	}
	os["a"].Tie.Step(ctx)
	c.advance(300 * time.Millisecond)
	step(os["a"])
	if os["a"].Held()[k] {
		t.Fatal("a, unable to read the tie-break Lease, still holds the VIP 300 ms into the tie")
	}
}

// TestTheHolderContendsAsTheCutForms: the other half finds its tie first, 250 ms before the
// holder's half does (gossip probes each node in turn: the halves of the matrix's 2|2 found
// theirs up to 0.2 s apart), longer than the head start a holder has. The holder, seeing the
// first node of the other half go with its side one node from a tie, claims the Lease then, and
// keeps the VIP. Without that, the other half won the race, and the VIP moved.
func TestTheHolderContendsAsTheCutForms(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	v := vipRanked(t, all, "a")
	k := "ns/lb-" + v
	c := &clock{t: time.Unix(1000, 0)}
	api := fake.NewClientBuilder().WithScheme(manager.NewScheme()).Build()
	os := cluster(t, loadBalancers(t, v), c, all...)
	for n, o := range os {
		o.Tie = &nodes.TieBreak{Client: api, Reader: api, Namespace: "l4lb-system", Node: n, Now: c.now, AtOnce: o.ClaimsTieAtOnce}
	}
	settle(os)
	c.advance(2 * settledHold)
	if !os["a"].Held()[k] {
		t.Fatalf("the test needs a to hold %s: %v", k, os["a"].Held())
	}
	see := func(n string, alive ...string) { os[n].Gossip.(*fakePeers).view = view(4, alive...) }
	ctx := context.Background()
	see("a", "a", "b", "d") // a sees c go first
	step(os["a"])
	os["a"].Tie.Step(ctx)
	see("c", "c", "d") // c's half finds its tie
	see("d", "c", "d")
	step(os["c"])
	step(os["d"])
	c.advance(250 * time.Millisecond)
	os["c"].Tie.Step(ctx) // past the head start: the Lease is a's already
	os["d"].Tie.Step(ctx)
	see("a", "a", "b") // a's half finds its tie
	see("b", "a", "b")
	for range 4 {
		for _, n := range all {
			step(os[n])
			answer(os[n])
			os[n].Tie.Step(ctx)
		}
		c.advance(100 * time.Millisecond)
		if !os["a"].Held()[k] || os["c"].Held()[k] {
			t.Fatalf("a holds %v, c holds %v; want the VIP kept on a alone", os["a"].Held(), os["c"].Held())
		}
	}
}

// A load balancer taken on that no node held asks the agent for a paced pass (a thousand
// created at once must not set off a thousand passes back to back); a VIP that comes from
// another node or goes away asks for one at once, since that node or its clients wait on it.
func TestOnlyAVIPMovingBetweenNodesIsUrgent(t *testing.T) {
	live := []string{"a", "b", "c"}
	fresh, moved := vipRanked(t, live, "a"), ""
	for i := 1; i < 250 && moved == ""; i++ {
		if v := fmt.Sprintf("198.51.100.%d", i); v != fresh && nodes.Ranked(v, live, nil)[0] == "a" {
			moved = v
		}
	}
	c := &clock{t: time.Unix(1000, 0)}
	p := &fakePeers{view: view(3, live...)}
	r := fake.NewClientBuilder().WithScheme(manager.NewScheme()).WithObjects(
		&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lb-" + fresh},
			Status: lbv1.LoadBalancerStatus{VIPAddress: fresh}}).Build()
	o := newTestOwnership("a", p, r, c)
	if got := o.step(context.Background(), logr.Discard()); got != paced || !o.Held()["ns/lb-"+fresh] {
		t.Fatalf("a new load balancer taken on: step %v, held %v; want paced, held", got, o.Held())
	}
	if got := o.step(context.Background(), logr.Discard()); got != unchanged {
		t.Fatalf("nothing changed: step %v", got)
	}
	// Another node answered for this one until now (its status says so).
	if err := r.Create(context.Background(), &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lb-" + moved},
		Status: lbv1.LoadBalancerStatus{VIPAddress: moved, Holder: "b"}}); err != nil {
		t.Fatal(err)
	}
	if got := o.step(context.Background(), logr.Discard()); got != urgent || !o.Held()["ns/lb-"+moved] {
		t.Fatalf("a VIP taken over from node b: step %v, held %v; want urgent, held", got, o.Held())
	}
	p.view.Unfit["a"] = true // a leaves the election: its VIPs go to the next nodes
	if got := o.step(context.Background(), logr.Discard()); got != urgent || len(o.Held()) != 0 {
		t.Fatalf("VIPs released: step %v, held %v; want urgent, none", got, o.Held())
	}
}

// cacheReader lists load balancers as the agent's cache does with UnsafeDisableDeepCopy: its
// own objects, no copies (the fake client's copies would be most of what is measured).
type cacheReader struct {
	client.Reader
	items []lbv1.LoadBalancer
}

func (c cacheReader) List(_ context.Context, l client.ObjectList, _ ...client.ListOption) error {
	l.(*lbv1.LoadBalancerList).Items = c.items
	return nil
}

// BenchmarkOwnershipStep is one ownership tick (every 50 ms on every node) of a node of three
// with 1,000 load balancers, each node holding its share.
func BenchmarkOwnershipStep(b *testing.B) {
	var vips []string
	for i := range 1000 {
		vips = append(vips, fmt.Sprintf("10.0.%d.%d", i/250, i%250))
	}
	var lbs lbv1.LoadBalancerList
	if err := loadBalancers(&testing.T{}, vips...).List(context.Background(), &lbs); err != nil {
		b.Fatal(err)
	}
	os := cluster(&testing.T{}, cacheReader{items: lbs.Items}, &clock{t: time.Now()}, "n1", "n2", "n3")
	settle(os)
	b.ReportAllocs()
	for b.Loop() {
		step(os["n1"])
	}
}
