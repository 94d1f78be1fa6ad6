package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// Ownership decides which load balancers this node holds, stands by for, or still lingers on.
//
// Who is alive comes from gossip alone, so the API server being slow, stopped or restarting
// moves nothing; the objects come from the informer cache, which keeps its last state. For
// each VIP the live nodes are ranked the same way on every node (nodes.Ranked). A VIP stays
// with the node that holds it (answers ARP for it, reports its status) while that node may
// hold it: a better-ranked node that comes back does not take it (no failback that would
// reset its connections; Preemptive restores that). A VIP nobody holds goes to the first in
// the ranking, once no other alive node says it answers for it (nodes.View.Claims: a hand-over
// is acknowledged by the old holder's claim, not timed). The first other node in the ranking
// stands by (serves its listeners and probes its members, so it takes over with fresh health).
// A node that is not quorate (nodes.View.Quorate) holds nothing.
type Ownership struct {
	Node     string
	Gossip   Peers
	Registry *nodes.Registry
	// Tie and Witness decide a tie (exactly half of the nodes in view): the half that holds
	// the tie-break Lease wins, and a node whose witness (the default gateway) does not answer
	// does not. Both nil: a tie keeps the VIPs (tests only).
	Tie     *nodes.TieBreak
	Witness *nodes.Witness
	Reader  client.Reader
	// Tick is how often holders are recomputed (deaths are noticed by gossip, not by a tick,
	// but linger and hand-over deadlines are).
	Tick time.Duration
	// Preemptive moves a VIP back to the first node of its ranking whenever that node can hold
	// it (the old behaviour, keepalived without nopreempt): the holder lets it go, and the
	// first takes it once the holder's claim says so.
	Preemptive bool
	// Linger keeps a VIP that was let go local, unanswered, so connections already on their
	// way (neighbours that have not heard the new holder yet) still land and are served.
	Linger time.Duration
	// Fitness says whether this node may hold VIPs (its interfaces are up, its engine serves);
	// an unfit node tells the others and leaves the election.
	Fitness func() error

	Recorder events.EventRecorder
	// Watchdog fails the agent's /healthz when a step hangs (kubelet restarts it then): a
	// node stuck in a step keeps answering for what it held, whatever happens around it.
	Watchdog *watchdog.Watchdog
	// Now is the clock of linger and hand-over deadlines (nil: time.Now); tests step it.
	Now func() time.Time

	// trigger asks the agent for a pass at once, pace for one paced as changes of the
	// objects are (see change).
	trigger, pace func()
	joined        atomic.Bool

	mu        sync.Mutex
	held      map[string]string // key -> VIP
	heldSince map[string]time.Time
	standby   map[string]string
	// successors are, by VIP held here, the node that would take it over (FlowSync).
	successors map[string]string
	lingering  map[string]lingered
	yielded    map[string]yielding // VIP -> to whom and until when this node leaves it (Conflict)
	// lastArrival is when another node last came into this node's view (alive, having not
	// been); seen is who was alive in the previous computation.
	lastArrival time.Time
	seen        map[string]bool
	leaving     map[string]time.Time // node -> since when it is unfit or draining
	// What the log last said of this node's majority and of why it waits to take a VIP
	// nobody claims, so that a VIP left unanswered explains itself once, not every tick.
	loggedQuorate bool
	loggedWait    string

	heldGauge          prometheus.Gauge
	quorate            prometheus.Gauge
	acquired, released prometheus.Counter
}

// Peers is what ownership reads and writes of the gossip between the dataplane nodes
// (nodes.Gossip): who is alive, and what this node tells the others of itself.
type Peers interface {
	View() nodes.View
	Meta() nodes.Meta
	SetMeta(nodes.Meta) error
	Join(addresses []string) (int, error)
	Forget(node string)
	SetListed(nodes []string)
	SetClaim(vips []string)
}

type lingered struct {
	vip   string
	until time.Time
}

// NewOwnership registers the VIP ownership metrics with reg.
func NewOwnership(node string, g Peers, reg *nodes.Registry, r client.Reader, pr prometheus.Registerer) *Ownership {
	o := &Ownership{Node: node, Gossip: g, Registry: reg, Reader: r, Tick: 50 * time.Millisecond,
		Linger: 2 * time.Second,
		held:   map[string]string{}, heldSince: map[string]time.Time{}, standby: map[string]string{}, lingering: map[string]lingered{},
		yielded: map[string]yielding{}, leaving: map[string]time.Time{},
		heldGauge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "l4lb", Name: "vips_held", Help: "VIPs this node holds."}),
		quorate:   prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "l4lb", Name: "quorate", Help: "1 when this node's side of the dataplane may hold VIPs (a majority, or half and the witness)."}),
		acquired:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "l4lb", Name: "vip_acquisitions_total", Help: "VIPs this node took."}),
		released:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "l4lb", Name: "vip_releases_total", Help: "VIPs this node gave up."}),
	}
	if pr != nil {
		pr.MustRegister(o.heldGauge, o.quorate, o.acquired, o.released)
	}
	return o
}

// Held is the set of load balancers (namespace/name) this node holds now: it answers for
// their VIPs and reports their status.
func (o *Ownership) Held() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return keys(o.held)
}

// Alone reports whether no other node could take this node's VIPs: none in view is fit and
// not draining.
func (o *Ownership) Alone() bool {
	v := o.Gossip.View()
	for _, n := range v.Eligible() {
		if n != o.Node && !v.Draining[n] {
			return false
		}
	}
	return true
}

// ClaimsTieAtOnce reports whether this node claims a free tie-break Lease at once
// (nodes.TieBreak.AtOnce): it holds a VIP it took more than settledHold ago, or the dataplane
// has two nodes or fewer. A VIP taken just before a tie began was most likely taken as the cut
// formed (a node sees the other half go one node at a time, the first as a death, and takes
// its VIPs), while its holder of long, on the other half, still answers: that holder goes
// first, so the VIP stays where its connections are. With two nodes the survivor of a death is
// alone in its tie, and waiting would only delay the failover (0.5 s became 0.8 s); a cut
// between two nodes that both reach the API server races as before.
func (o *Ownership) ClaimsTieAtOnce() bool {
	if o.Gossip.View().Known <= 2 {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.holdsSettled(o.now())
}

// departed reports whether a node alive in the previous computation is not now. Called with
// o.mu held.
func (o *Ownership) departed(view nodes.View) bool {
	for n := range o.seen {
		if !slices.Contains(view.Alive, n) {
			return true
		}
	}
	return false
}

// holdsSettled reports whether this node holds a VIP it took more than settledHold ago.
// Called with o.mu held.
func (o *Ownership) holdsSettled(now time.Time) bool {
	for _, since := range o.heldSince {
		if now.Sub(since) > settledHold {
			return true
		}
	}
	return false
}

// settledHold is longer than the time between a node seeing the first and the last node of
// the other half go (memberlist's failure detection, a few hundred milliseconds).
const settledHold = time.Second

// Serving is what this node serves (listeners bound, members probed): what it holds, what
// it stands by for, and what it just let go.
func (o *Ownership) Serving() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := keys(o.held)
	maps.Copy(s, keys(o.standby))
	for k := range o.lingering {
		s[k] = true
	}
	return s
}

// Successors are, for each VIP this node holds, the node that would take it over (the next
// of its ranking): the kernel path's flows are told to it (FlowSync).
func (o *Ownership) Successors() map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.successors)
}

// Lingering is the set of load balancers whose VIP stays local, unanswered, for a while.
func (o *Ownership) Lingering() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]bool{}
	for k := range o.lingering {
		out[k] = true
	}
	return out
}

// Joined reports whether this node has met the others (or found nobody to meet): before
// that, it holds nothing, so a restarted agent never takes a VIP another still holds.
func (o *Ownership) Joined() bool { return o.joined.Load() }

// Changed asks for a recomputation now (gossip calls it on every membership change).
func (o *Ownership) Changed() {
	if o.trigger != nil && o.joined.Load() {
		o.trigger()
	}
}

// Start runs the registry, joins the peers, and recomputes the holders every tick, calling
// the agent when they change. It is a manager Runnable.
func (o *Ownership) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("vip-ownership")
	go o.Registry.Run(ctx)
	go o.joinLoop(ctx)
	if o.Witness != nil {
		go o.Witness.Run(ctx)
	}
	if o.Tie != nil {
		go o.Tie.Run(ctx)
	}
	tick := time.NewTicker(o.Tick)
	defer tick.Stop()
	fitAt := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if time.Since(fitAt) > 500*time.Millisecond {
			fitAt = time.Now()
			o.checkFitness(log)
		}
		done := o.Watchdog.Begin("VIP ownership")
		ch := o.step(ctx, log)
		done()
		switch {
		case ch == urgent && o.trigger != nil:
			o.trigger()
		case ch == paced && o.pace != nil:
			o.pace()
		}
	}
}

// errNotJoined keeps a starting node unfit: before it has met the others (and so before its
// informers and engine run), the others must not hand it VIPs.
var errNotJoined = errors.New("not yet joined the other dataplane nodes")

// checkFitness tells the others whether this node may hold VIPs: it has joined, and Fitness
// (its interfaces, its engine) says so.
func (o *Ownership) checkFitness(log logr.Logger) {
	var err error
	switch {
	case !o.joined.Load():
		err = errNotJoined
	case o.Fitness != nil:
		err = o.Fitness()
	}
	m := o.Gossip.Meta()
	if unfit := err != nil; unfit != m.Unfit {
		if unfit {
			log.Error(err, "this node leaves the VIP election")
		} else {
			log.Info("this node is fit to hold VIPs")
		}
		m.Unfit = unfit
		o.Gossip.SetMeta(m)
	}
}

// A step's outcome for the agent.
type change int

const (
	unchanged change = iota
	// paced: what this node serves changed and no other node waits on it (a new load
	// balancer's VIP taken, a standby's listeners, a linger ended): the agent's pass is paced
	// as for changes of the objects, or a thousand load balancers taken on one per tick would
	// have it run passes back to back.
	paced
	// urgent: a VIP goes to or comes from another node (a takeover, a release the next
	// holder waits for, a failback): the agent's pass runs at once.
	urgent
)

// step recomputes; it reports whether what the node answers for or serves changed, and
// whether the agent must act on it at once.
func (o *Ownership) step(ctx context.Context, log interface {
	Info(string, ...any)
}) change {
	// Every tick reads every load balancer: the cache's own objects, not copies (they are only
	// read here; docs/benchmarks.md, "Scale", has what the copies cost).
	var lbs lbv1.LoadBalancerList
	if err := o.Reader.List(ctx, &lbs, client.UnsafeDisableDeepCopy); err != nil {
		return unchanged // the cache is not ready yet: keep what is held
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	// Sized as last time: a thousand load balancers grow them again at every tick otherwise.
	held, standby, successors := make(map[string]string, len(o.held)), make(map[string]string, len(o.standby)), make(map[string]string, len(o.successors))
	fromOther := map[string]bool{} // held here, last reported held by another node
	view := o.Gossip.View()
	o.trackLeaving(view, now)
	quorate := o.joined.Load() && view.Quorate(o.tie)
	if !quorate && view.Tied() && o.Tie != nil && o.Tie.Undecided() {
		// A tie began and its outcome is not known yet (a round trip to the API server):
		// keep what is held, take nothing, until it is (nodes.TieBreak.Undecided).
		return unchanged
	}
	o.quorate.Set(b2f(quorate))
	if quorate != o.loggedQuorate && o.joined.Load() {
		msg := "this node's side of the cluster lost its majority: it holds no VIP"
		if quorate {
			msg = "this node's side of the cluster has a majority: it may hold VIPs"
		}
		log.Info(msg, "alive", view.Alive, "known", view.Known)
		o.loggedQuorate = quorate
	}
	wait := ""
	for _, n := range view.Alive {
		if n != o.Node && !o.seen[n] {
			o.lastArrival = now
		}
	}
	if o.Tie != nil && quorate && view.OneFromTie() && o.departed(view) && o.holdsSettled(now) {
		o.Tie.Expect() // one more node gone makes a tie: contend before the other half does
	}
	o.seen = map[string]bool{}
	for _, n := range view.Alive {
		o.seen[n] = true
	}
	if quorate {
		live := view.Eligible()
		local := o.memberNodes(ctx, lbs.Items)
		for _, lb := range lbs.Items {
			if lb.Status.VIPAddress == "" || !lb.DeletionTimestamp.IsZero() {
				continue
			}
			k, vip := lb.Namespace+"/"+lb.Name, lb.Status.VIPAddress
			if strings.Contains(vip, ":") { // an IPv4 address is written one way only
				if a, err := netip.ParseAddr(vip); err == nil {
					vip = a.Unmap().String() // as claims name it (the addresses answered for)
				}
			}
			eligible := live
			if lb.Spec.TrafficPolicy == lbv1.TrafficLocal {
				// Only a node running a member may hold it; with none, nobody answers, as
				// Kubernetes drops a Local Service's traffic on a node without endpoints.
				eligible = slices.DeleteFunc(slices.Clone(live), func(n string) bool { return !local[k][n] })
			}
			avoid := avoiding(view.Draining, lb.Annotations[lbv1.FailoverAnnotation])
			order := nodes.Ranked(vip, eligible, avoid)
			switch holder := o.holder(k, vip, order, eligible, avoid, view, now); {
			case holder == o.Node && o.yielding(vip, view, now):
				standby[k] = vip // another node answers for it: serve, do not answer
				if _, had := o.held[k]; had {
					o.event(ctx, k, "VIPConflict", "node %s saw another l4lb node answer for the VIP and yields it (that node ranks first)")
				}
			case holder == o.Node:
				held[k] = vip
				fromOther[k] = lb.Status.Holder != "" && lb.Status.Holder != o.Node
				if n := next(order, o.Node); n != "" {
					successors[vip] = n
				}
			case holder == "" && len(order) > 0 && order[0] == o.Node:
				standby[k] = vip // first, waiting for the VIP to be let go: serve it meanwhile
				wait = o.waitReason(view)
			case next(order, holder) == o.Node:
				standby[k] = vip
			}
		}
	}
	if wait != o.loggedWait {
		if wait != "" {
			log.Info("waiting before taking the VIPs nobody answers for", "reason", wait)
		}
		o.loggedWait = wait
	}
	// A yield ends when its time is up, or for good when the node yielded to goes out of
	// view: back later, it has let the VIP go meanwhile (it was cut off), and yielding to it
	// again would leave the VIP to nobody until it settles (2 s in the randomized run).
	maps.DeleteFunc(o.yielded, func(_ string, y yielding) bool {
		return !now.Before(y.until) || !slices.Contains(view.Alive, y.to)
	})

	ch := unchanged
	if !maps.Equal(held, o.held) || !maps.Equal(standby, o.standby) {
		ch = paced
	}
	for k, v := range held {
		if _, had := o.held[k]; !had {
			if fromOther[k] {
				ch = urgent
			}
			o.acquired.Inc()
			log.Info("acquiring VIP", "loadBalancer", k, "vip", v, "node", o.Node)
			o.event(ctx, k, "VIPAcquired", "node %s holds the VIP now")
			o.heldSince[k] = now
		}
		delete(o.lingering, k)
	}
	for k, v := range o.held {
		if _, still := held[k]; !still {
			ch = urgent
			o.released.Inc()
			log.Info("releasing VIP", "loadBalancer", k, "vip", v, "node", o.Node, "quorate", quorate)
			o.event(ctx, k, "VIPReleased", "node %s let the VIP go")
			delete(o.heldSince, k)
			o.lingering[k] = lingered{vip: v, until: now.Add(o.Linger)}
		}
	}
	for k, l := range o.lingering {
		if now.After(l.until) {
			delete(o.lingering, k)
			ch = max(ch, paced)
		}
	}
	o.held, o.standby, o.successors = held, standby, successors
	o.heldGauge.Set(float64(len(held)))
	return ch
}

// memberNodes are the nodes of the members of the trafficPolicy Local load balancers among lbs,
// by load balancer; nil when there is none (nothing else is listed then).
func (o *Ownership) memberNodes(ctx context.Context, lbs []lbv1.LoadBalancer) map[string]map[string]bool {
	if !slices.ContainsFunc(lbs, func(lb lbv1.LoadBalancer) bool { return lb.Spec.TrafficPolicy == lbv1.TrafficLocal }) {
		return nil
	}
	var pools lbv1.PoolList
	var listeners lbv1.ListenerList
	if o.Reader.List(ctx, &pools, client.UnsafeDisableDeepCopy) != nil || o.Reader.List(ctx, &listeners, client.UnsafeDisableDeepCopy) != nil {
		return nil
	}
	return model.MemberNodes(model.Objects{Pools: pools.Items, Listeners: listeners.Items})
}

// avoiding is the nodes that rank last for one VIP: the draining ones, and the node a failover
// moves it off. Only the ranking: a failover's old holder is alive and not leaving, so the new
// holder waits for it to let go (handingOver).
func avoiding(draining map[string]bool, failoverFrom string) map[string]bool {
	if failoverFrom == "" {
		return draining
	}
	out := maps.Clone(draining)
	if out == nil {
		out = map[string]bool{}
	}
	out[failoverFrom] = true
	return out
}

// holder is who holds the VIP vip of k, as this node sees it: this node while it holds it and
// may (not preemptively moved, not draining or failed over from, still eligible); else an
// alive node that says it answers for it; else the first of order, once every alive node has
// been heard (one not heard since it came back may hold it) and no node came into view for
// arrivalSettle (after a partition heals, the holder may not be in view yet). "" while that is
// not known.
// Called with o.mu held.
func (o *Ownership) holder(k, vip string, order, eligible []string, avoid map[string]bool, view nodes.View, now time.Time) string {
	// A node that left the election lets its VIPs go at its next reconcile; one whose claim
	// outlives that by far is stuck (its engine wedged), and is not waited for any longer.
	claimers := slices.DeleteFunc(view.ClaimedBy(vip), func(n string) bool {
		since, ok := o.leaving[n]
		return ok && now.Sub(since) > stuckAfter
	})
	if _, had := o.held[k]; had && slices.Contains(eligible, o.Node) && !avoid[o.Node] &&
		(!o.Preemptive || len(order) > 0 && order[0] == o.Node) {
		// Two holders (views that disagreed, now joined): the one that ranks first for the VIP
		// keeps it, a rule both apply alike (and Conflict, on the wire). By the pure ranking:
		// two nodes' order for a VIP does not depend on who else is alive.
		for _, n := range claimers {
			if nodes.Ranked(vip, []string{o.Node, n}, nil)[0] == n {
				return n
			}
		}
		return o.Node
	}
	if len(claimers) > 0 {
		// Held elsewhere; the first of the ranking among several claimers keeps it.
		if i := slices.IndexFunc(order, func(n string) bool { return slices.Contains(claimers, n) }); i >= 0 {
			return order[i]
		}
		return claimers[0]
	}
	if len(order) == 0 || len(view.Unheard) > 0 || now.Sub(o.lastArrival) < arrivalSettle {
		return ""
	}
	return order[0]
}

// waitReason says why holder gives no node a VIP nobody claims (for the log). Called with
// o.mu held.
func (o *Ownership) waitReason(view nodes.View) string {
	if len(view.Unheard) > 0 {
		return fmt.Sprintf("not yet heard what %v answer for", slices.Sorted(maps.Keys(view.Unheard)))
	}
	return fmt.Sprintf("a node came into view at %s; the others may still be coming back (%v)", o.lastArrival.Format("15:04:05.000"), arrivalSettle)
}

// stuckAfter is how long a node that left the election (unfit, draining) may still claim VIPs
// before the others take them anyway.
const stuckAfter = 3 * time.Second

// trackLeaving records since when each alive node has been unfit or draining. Called with
// o.mu held.
func (o *Ownership) trackLeaving(view nodes.View, now time.Time) {
	for _, n := range view.Alive {
		if view.Unfit[n] || view.Draining[n] {
			if _, ok := o.leaving[n]; !ok {
				o.leaving[n] = now
			}
		} else {
			delete(o.leaving, n)
		}
	}
	maps.DeleteFunc(o.leaving, func(n string, _ time.Time) bool { return !slices.Contains(view.Alive, n) })
}

// next is the node that stands by for a VIP held by holder: the first of order after it.
func next(order []string, holder string) string {
	for _, n := range order {
		if n != holder {
			return n
		}
	}
	return ""
}

type yielding struct {
	to    string
	until time.Time
}

// yielding reports whether this node leaves vip to another after a conflict: until yieldFor
// has passed, while that node is alive. Called with o.mu held.
func (o *Ownership) yielding(vip string, view nodes.View, now time.Time) bool {
	y, ok := o.yielded[vip]
	return ok && now.Before(y.until) && slices.Contains(view.Alive, y.to)
}

// arrivalSettle is how long after another node came into its view (at its start, after a
// partition healed) a node waits before it takes a VIP nobody it sees claims: the rest of the
// cluster comes back into view one node at a time, and the holder may be among the last. A
// takeover from a node that died is not delayed (nobody arrived).
const arrivalSettle = 2 * time.Second

// yieldFor is how long a node that yielded a VIP in a conflict leaves it (RFC 5227's
// DEFEND_INTERVAL): if the nodes still disagree after it, the conflict comes back and is
// settled the same way.
const yieldFor = 10 * time.Second

// Conflict settles another MAC's ARP claim for a VIP this node answers for with own (the
// responder calls it): when the other MAC is another l4lb node's (its gossip Meta says so),
// the one of the two that ranks first for the VIP keeps it and the other yields it for
// yieldFor, so two nodes whose views disagreed (an agent that stalled, one-way loss) stop
// answering together within a round of ARP. It is the rule two holders apply when they hear
// each other's claims (holder), so the wire and the gossip never settle it two ways. A MAC no
// l4lb node has is a stranger's: the VIP is defended (RFC 5227). It reports whether this
// node yields.
func (o *Ownership) Conflict(vip netip.Addr, own, other net.HardwareAddr, log logr.Logger) bool {
	node := o.Gossip.View().NodeWithMAC(other)
	if node == "" || node == o.Node {
		log.Info("a device that is not an l4lb node claims a VIP this node answers for: defending it", "vip", vip, "mac", other)
		return false
	}
	if nodes.Ranked(vip.String(), []string{o.Node, node}, nil)[0] == o.Node {
		log.Info("another l4lb node answers for a VIP this node holds: keeping it (this node ranks first)", "vip", vip, "node", node, "mac", other)
		return false
	}
	log.Info("another l4lb node answers for a VIP this node holds: yielding it (that node ranks first)", "vip", vip, "node", node, "mac", other, "for", yieldFor)
	o.mu.Lock()
	o.yielded[vip.String()] = yielding{to: node, until: o.now().Add(yieldFor)}
	o.mu.Unlock()
	if o.trigger != nil {
		o.trigger()
	}
	return true
}

func (o *Ownership) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// tie reports whether this node's half (alive) wins a tie.
func (o *Ownership) tie(alive []string) bool {
	if o.Tie != nil && !o.Tie.Won(alive) {
		return false
	}
	return o.Witness == nil || o.Witness.Reachable()
}

// joinLoop meets the peers the API server lists, now and every few seconds, so a node that
// was declared dead while cut off comes back when the cut heals; the listed nodes are the
// quorum's base, and nodes whose Lease is gone leave it. Until the first listing the node is
// not joined and holds nothing: without the API server at its start, it cannot know how many
// nodes a majority needs.
func (o *Ownership) joinLoop(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("gossip")
	attempts := 0
	for {
		peers, listed, gone, err := o.Registry.Peers(ctx, o.Reader)
		if err == nil {
			for _, n := range gone {
				o.Gossip.Forget(n)
			}
			o.Gossip.SetListed(listed)
			alive := o.Gossip.View().Alive
			var missing []string
			for n, addr := range peers {
				if !slices.Contains(alive, n) {
					missing = append(missing, addr)
				}
			}
			attempts++
			met, jerr := o.Gossip.Join(missing)
			if jerr != nil && met == 0 && len(missing) > 0 {
				log.V(1).Info("peers did not answer", "peers", missing, "err", jerr)
			}
			// Joined once everyone listed was met, or nobody listed answers after a few
			// tries (they are dead: holding nothing would be an outage).
			if !o.joined.Load() && (len(missing) == 0 || met == len(missing) || attempts >= 3) {
				o.joined.Store(true)
				log.Info("joined the dataplane nodes", "alive", o.Gossip.View().Alive)
				// Fit at once (not at the next look): an agent restarted alone must hold the
				// VIPs the kernel carries for it before its first reconcile retires the
				// kernel's rules.
				o.checkFitness(ctrl.LoggerFrom(ctx).WithName("vip-ownership"))
				o.Changed()
			}
		}
		wait := 2 * time.Second
		if !o.joined.Load() {
			wait = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (o *Ownership) event(ctx context.Context, key, reason, format string) {
	if o.Recorder == nil {
		return
	}
	ns, name, _ := strings.Cut(key, "/")
	var lb lbv1.LoadBalancer
	if err := o.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &lb); err != nil {
		return
	}
	o.Recorder.Eventf(&lb, nil, "Normal", reason, "HoldVIP", format, o.Node)
}

func keys(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
