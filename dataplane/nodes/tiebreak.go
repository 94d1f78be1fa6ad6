package nodes

import (
	"context"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l4lb/l4lb/internal/podowner"
)

// TieLease is the Lease that decides ties, in the node Leases' namespace.
const TieLease = "l4lb-tiebreak"

// DefaultTieDuration is how long a tie-break claim lasts unrenewed; the holder renews it every
// quarter of that and gives it up after two thirds without a renewal.
const DefaultTieDuration = 6 * time.Second

// headStart is how long, from the start of a tie, a node that has not held a VIP for a while
// (AtOnce) leaves a free Lease to the nodes that have: when both halves reach the API server,
// the half that held the VIPs wins, and they stay where they are, with their connections (the
// race went either way before: the matrix's 2|2 moved the VIP every other run).
const headStart = 200 * time.Millisecond

// undecidedFor bounds how long a node keeps what it holds when a tie begins and it has not yet
// read the Lease (Undecided): letting go at once and taking the VIPs back a round trip later left
// them unanswered for up to 1.1 s in the randomized run. A node that cannot reach the API
// server lets go after it, while the other half takes over after headStart at the earliest:
// they answer together for about the difference (the matrix's 2|2 with the API server on the
// other half: 0.44 s with 500 ms). A read slower than this (a loaded API server) only costs
// what letting go at once did.
const undecidedFor = 300 * time.Millisecond

// TieBreak decides a tie: when exactly half of the listed dataplane nodes are alive in a
// node's view, the half that holds the tie-break Lease may hold VIPs, and only that half. The
// API server orders the writes of one Lease, so two halves that both reach it cannot both win
// (a witness both halves reach, such as the default gateway, would let both hold); a half that
// cannot reach it does not win. The Lease is read and written only while a tie lasts.
//
// Expiry is judged on this node's own clock, from when it last saw the Lease change, never from
// the time written in it, so clocks that disagree between nodes cannot give two winners:
// a claim counts for renewDeadline after a renewal was seen, and is taken over only after
// Duration (> renewDeadline + the poll period) without one.
type TieBreak struct {
	Client    client.Client
	Reader    client.Reader // the API server itself, not a cache: a cached holder may be old
	Namespace string
	Node      string
	Duration  time.Duration
	Now       func() time.Time // tests; nil: time.Now
	// AtOnce reports whether this node claims a free Lease at once in a tie (it has answered
	// for a VIP for a while); nil or false: it leaves it to those for headStart.
	AtOnce func() bool

	kick chan struct{} // a tie began: contend now, not at the next tick

	mu        sync.Mutex
	wanted    time.Time // when Won was last asked
	tieFrom   time.Time // when the tie being asked about began
	holder    string    // the Lease's holder as last read
	seen      string    // holder and renewTime as last read, to notice a renewal
	changedAt time.Time // when this node last saw the Lease change
	readAt    time.Time // when this node last read (or wrote) the Lease
	wroteAt   time.Time // this node's last successful claim
}

func (t *TieBreak) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *TieBreak) duration() time.Duration {
	if t.Duration > 0 {
		return t.Duration
	}
	return DefaultTieDuration
}

func (t *TieBreak) renewDeadline() time.Duration { return t.duration() * 2 / 3 }

// Won reports whether the half of the nodes alive in this node's view (alive, this node
// included) holds the tie-break: this node's own claim, or the claim of a node in its half
// seen renewed lately. Asking is what keeps Run contending.
func (t *TieBreak) Won(alive []string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Sub(t.wanted) >= t.duration()/2 {
		t.tieFrom = now
		t.kickLocked() // a tie begins: the survivor of two takes the Lease in one round trip
	}
	t.wanted = now
	switch {
	case t.holder == t.Node:
		return now.Sub(t.wroteAt) < t.renewDeadline()
	case t.holder != "" && slices.Contains(alive, t.holder):
		// Another node's claim counts once it was seen renewed in this tie: one read in an
		// earlier tie may be a claim let go since (its tie ended), which the other half,
		// reaching the API server, may have taken; this node, cut off, would never know.
		return !t.changedAt.Before(t.tieFrom) && now.Sub(t.changedAt) < t.renewDeadline()
	}
	return false
}

// Undecided reports whether a tie began less than undecidedFor ago (Won asked) and this node has
// not read the Lease since: the outcome is not known yet, and what the node holds it keeps
// meanwhile (it takes nothing new).
func (t *TieBreak) Undecided() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	return now.Sub(t.wanted) < t.duration()/2 && now.Sub(t.tieFrom) < undecidedFor && t.readAt.Before(t.tieFrom)
}

// Expect contends for the Lease now, as a tie would: a tie may be about to begin (one more node
// gone would make one) and this node has held VIPs for a while. The two halves of a cut find
// their tie up to a few hundred milliseconds apart (gossip probes each node in turn), more than
// headStart: the half that held the VIPs claims the Lease as the cut forms, before the other
// half finds its tie, and keeps them. A claim made for nothing is let go once no tie wants it.
func (t *TieBreak) Expect() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Sub(t.wanted) >= t.duration()/2 {
		t.tieFrom = now
	}
	t.wanted = now
	t.kickLocked()
}

// Run contends for the Lease while ties last (Won asked in the last two periods), every
// quarter of Duration, and gives up a claim once a tie is over.
func (t *TieBreak) Run(ctx context.Context) {
	tick := time.NewTicker(t.duration() / 4)
	defer tick.Stop()
	t.mu.Lock()
	kick := t.kicks()
	t.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-kick:
		}
		t.Step(ctx)
	}
}

// kicks is the channel Won wakes Run with; called with t.mu held.
func (t *TieBreak) kicks() chan struct{} {
	if t.kick == nil {
		t.kick = make(chan struct{}, 1)
	}
	return t.kick
}

// kickLocked wakes Run (one wake-up pending is enough); called with t.mu held.
func (t *TieBreak) kickLocked() {
	select {
	case t.kicks() <- struct{}{}:
	default:
	}
}

func (t *TieBreak) kickNow() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kickLocked()
}

// Step reads the Lease and claims or renews it when this node may, or releases it when no tie
// wants it any more.
func (t *TieBreak) Step(ctx context.Context) {
	t.mu.Lock()
	now := t.now()
	wanted := now.Sub(t.wanted) < t.duration()/2
	mine := t.holder == t.Node
	wait := t.tieFrom.Add(headStart).Sub(now)
	t.mu.Unlock()
	if !wanted && !mine {
		return
	}
	if wait > 0 && (t.AtOnce == nil || !t.AtOnce()) {
		// A free Lease is left to the nodes that hold VIPs for a moment: come back then.
		time.AfterFunc(wait, t.kickNow)
	} else {
		wait = 0
	}
	ctx, cancel := context.WithTimeout(ctx, t.duration()/4)
	defer cancel()
	var l coordinationv1.Lease
	err := t.Reader.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: TieLease}, &l)
	if apierrors.IsNotFound(err) {
		if !wanted || wait > 0 {
			t.observe(nil, now)
			return
		}
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: TieLease}}
		podowner.Set(&l) // goes with the agent's pod that made it (and with the chart)
		t.claim(&l, now)
		t.put(ctx, &l, now, t.Client.Create(ctx, &l))
		return
	}
	if err != nil {
		return // unreachable: this node's claim, if any, runs out
	}
	t.observe(&l, now)
	t.mu.Lock()
	holder, idle := t.holder, now.Sub(t.changedAt)
	t.mu.Unlock()
	switch {
	case !wanted && holder == t.Node:
		// The tie is over: let the Lease go, so the next tie need not wait for it to expire.
		l.Spec.HolderIdentity = nil
		if t.Client.Update(ctx, &l) == nil {
			t.observe(&l, now)
		}
	case holder == t.Node || (holder == "" || idle >= t.duration()) && wait <= 0:
		t.claim(&l, now)
		t.put(ctx, &l, now, t.Client.Update(ctx, &l))
	}
}

// put records the outcome of writing this node's claim (err): written, or, when another node
// wrote first, what it wrote, read back at once, so that a node of the winning half counts its
// partner's claim now rather than a renewal period later (1.5 s without VIPs, in the
// randomized run's 2|2 cuts).
func (t *TieBreak) put(ctx context.Context, l *coordinationv1.Lease, now time.Time, err error) {
	switch {
	case err == nil:
		t.wrote(l, now)
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		var cur coordinationv1.Lease
		if t.Reader.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: TieLease}, &cur) == nil {
			t.observe(&cur, now)
		}
	}
}

func (t *TieBreak) claim(l *coordinationv1.Lease, now time.Time) {
	secs := int32(t.duration() / time.Second)
	at := metav1.NewMicroTime(now)
	node := t.Node
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != node {
		l.Spec.AcquireTime = &at
	}
	l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = &node, &at, &secs
}

func (t *TieBreak) wrote(l *coordinationv1.Lease, now time.Time) {
	t.observe(l, now)
	t.mu.Lock()
	t.wroteAt = now
	t.mu.Unlock()
}

// observe records the Lease as read (nil: there is none) and when it last changed.
func (t *TieBreak) observe(l *coordinationv1.Lease, now time.Time) {
	holder, renewed := "", ""
	if l != nil {
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		if l.Spec.RenewTime != nil {
			renewed = l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := holder + " " + renewed; s != t.seen {
		t.seen, t.changedAt = s, now
	}
	t.holder, t.readAt = holder, now
}
