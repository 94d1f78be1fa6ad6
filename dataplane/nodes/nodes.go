// Package nodes tells which dataplane nodes are alive, through one Lease per node that its
// agent renews (a heartbeat), and which of them holds each VIP: every agent computes the same
// answer from the same live set (rendezvous hashing), so VIPs spread over the nodes without
// one election per VIP.
package nodes

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Label marks the node Leases.
const Label = "lb.l4lb.io/dataplane-node"

// DrainingAnnotation on a node's Lease says the node is leaving: it gets no VIP, and gives up
// those it holds once another node has them.
const DrainingAnnotation = "lb.l4lb.io/draining"

// Timing is how fast a dead node is noticed. A holder that cannot renew for Fence drops its
// VIPs; others take them only after Duration without seeing a renewal, so two nodes never hold
// one VIP longer than the difference, even when a holder is cut off from the API server.
type Timing struct {
	Duration time.Duration // a node is dead after this long without a renewal
	Renew    time.Duration // how often a node renews
	Fence    time.Duration // a node that could not renew for this long drops its VIPs
}

// DefaultTiming notices a dead node after 0.8 s, so the new holder's announcement lands
// before a client's first SYN retransmission (1 s); a holder fences itself after four failed
// renewals in a row.
var DefaultTiming = Timing{Duration: 800 * time.Millisecond, Renew: 120 * time.Millisecond, Fence: 500 * time.Millisecond}

func leaseName(node string) string { return "l4lb-node-" + node }

// Heartbeat renews this node's Lease.
type Heartbeat struct {
	Client    client.Client
	Namespace string
	Node      string
	Timing    Timing

	lastOK   atomic.Int64 // unix nanos of the last successful renewal
	draining atomic.Bool
	lease    *coordinationv1.Lease // as last written; only Run's goroutine touches it
}

// Healthy reports whether this node renewed recently enough to hold VIPs.
func (h *Heartbeat) Healthy() bool {
	return time.Since(time.Unix(0, h.lastOK.Load())) < h.Timing.Fence
}

// Drain marks the node as leaving on its next renewal.
func (h *Heartbeat) Drain() { h.draining.Store(true) }

// Run renews until ctx ends, then deletes the Lease so the others need not wait for it to
// expire.
func (h *Heartbeat) Run(ctx context.Context) {
	tick := time.NewTicker(h.Timing.Renew)
	defer tick.Stop()
	for {
		if err := h.renew(ctx); err == nil {
			h.lastOK.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			del, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h.Client.Delete(del, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: h.Namespace, Name: leaseName(h.Node)}})
			cancel()
			return
		case <-tick.C:
		}
	}
}

// renew writes a new renewTime: one Update of the Lease this node last wrote, so a slow API
// server costs one round trip a renewal; the Lease is read again only after a failure.
func (h *Heartbeat) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timing.Fence)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	if h.lease == nil {
		var l coordinationv1.Lease
		err := h.Client.Get(ctx, client.ObjectKey{Namespace: h.Namespace, Name: leaseName(h.Node)}, &l)
		if apierrors.IsNotFound(err) {
			secs := int32(max(1, h.Timing.Duration.Round(time.Second)/time.Second))
			l = coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: h.Namespace, Name: leaseName(h.Node), Labels: map[string]string{Label: "true"}},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &h.Node, LeaseDurationSeconds: &secs, RenewTime: &now, AcquireTime: &now},
			}
			h.annotate(&l)
			if err := h.Client.Create(ctx, &l); err != nil {
				return err
			}
			h.lease = &l
			return nil
		}
		if err != nil {
			return err
		}
		h.lease = &l
	}
	h.lease.Spec.RenewTime = &now
	h.annotate(h.lease)
	if err := h.Client.Update(ctx, h.lease); err != nil {
		h.lease = nil
		return err
	}
	return nil
}

func (h *Heartbeat) annotate(l *coordinationv1.Lease) {
	if h.draining.Load() {
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[DrainingAnnotation] = "true"
	}
}

// Observer follows the node Leases and says which nodes are alive. Liveness is judged by when
// this agent saw a lease's renewTime change, on its own clock, so clock skew between nodes
// does not matter.
type Observer struct {
	Client    client.Reader
	Namespace string
	Timing    Timing

	mu   sync.Mutex
	seen map[string]seenLease
}

type seenLease struct {
	renew    time.Time // the lease's renewTime as last read
	changed  time.Time // when this agent saw it change
	draining bool
}

// Live returns the nodes alive now, and those of them that are draining.
func (o *Observer) Live(ctx context.Context) (live []string, draining map[string]bool, err error) {
	var leases coordinationv1.LeaseList
	if err := o.Client.List(ctx, &leases, client.InNamespace(o.Namespace), client.HasLabels{Label}); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]seenLease{}
	}
	present := map[string]bool{}
	draining = map[string]bool{}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil {
			continue
		}
		node := *l.Spec.HolderIdentity
		present[node] = true
		s, known := o.seen[node]
		if !known || !s.renew.Equal(l.Spec.RenewTime.Time) {
			s.renew, s.changed = l.Spec.RenewTime.Time, now
		}
		s.draining = l.Annotations[DrainingAnnotation] == "true"
		o.seen[node] = s
		if now.Sub(s.changed) < o.Timing.Duration {
			live = append(live, node)
			if s.draining {
				draining[node] = true
			}
		}
	}
	for node := range o.seen {
		if !present[node] {
			delete(o.seen, node)
		}
	}
	sort.Strings(live)
	return live, draining, nil
}

// Holder is the node that holds vip among the live nodes, draining ones excepted unless no
// other is left: the highest rendezvous hash of (vip, node). Every agent computes the same.
func Holder(vip string, live []string, draining map[string]bool) string {
	best, bestScore := "", uint64(0)
	for pass := 0; pass < 2 && best == ""; pass++ {
		for _, n := range live {
			if pass == 0 && draining[n] {
				continue
			}
			h := fnv.New64a()
			fmt.Fprintf(h, "%s/%s", vip, n)
			if s := mix(h.Sum64()); best == "" || s > bestScore {
				best, bestScore = n, s
			}
		}
	}
	return best
}

// mix spreads FNV's output, whose high bits barely change for similar inputs.
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
