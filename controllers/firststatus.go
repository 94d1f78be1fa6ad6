package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// firstStatusWait is how long a new listener's, pool's or health monitor's first status waits
// for the dataplane. Such an object reads PENDING_CREATE, OFFLINE and observedGeneration 0
// from the moment it exists, with no write: the API server defaults its status (the CRDs'
// status default), kubectl and the Octavia API show that, and kstatus reads an
// observedGeneration behind the generation as in progress. The controller's first write would
// add only "accepted, waiting for the dataplane", which usually answers within moments; so
// that write waits, and most new objects get one write from the controller, ACTIVE, not two.
// Refusals are written at once; an object the dataplane has not served after the wait gets its
// pending status, which says what it waits for (its load balancer's status says it from the
// start). The wait outlasts how far behind the dataplane's reports fall in a burst of creates,
// where the writes spared are what the API server's time goes to (docs/benchmarks.md, "Scale").
const firstStatusWait = 30 * time.Second

// firstStatus remembers when the controller first held back each new object's status.
type firstStatus struct {
	mu     sync.Mutex
	seen   map[types.UID]time.Time
	pruned time.Time
}

func newFirstStatus() *firstStatus { return &firstStatus{seen: map[types.UID]time.Time{}} }

// hold says how long obj's status next may still wait, 0 to write it now: only a status the
// controller never wrote, that would say no more than the API server's default does
// (PENDING_CREATE, nothing refused), waits, for firstStatusWait from the
// first time it was held.
func (f *firstStatus) hold(obj client.Object, cur, next *lbv1.CommonStatus, now time.Time) time.Duration {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prune(now)
	uid := obj.GetUID()
	if !defaulted(cur) || !onlyPending(next) {
		delete(f.seen, uid)
		return 0
	}
	first, ok := f.seen[uid]
	if !ok {
		first = now
		f.seen[uid] = now
	}
	if left := first.Add(firstStatusWait).Sub(now); left > 0 {
		return left
	}
	delete(f.seen, uid)
	return 0
}

// prune forgets objects held so long ago that they were written or deleted since (a deleted
// object is not reconciled again, so its entry would stay).
func (f *firstStatus) prune(now time.Time) {
	if now.Sub(f.pruned) < firstStatusWait {
		return
	}
	f.pruned = now
	for uid, t := range f.seen {
		if now.Sub(t) > 2*firstStatusWait {
			delete(f.seen, uid)
		}
	}
}

// defaulted: the status as the API server defaulted it, written by no one.
func defaulted(st *lbv1.CommonStatus) bool {
	return st.ObservedGeneration == 0 && len(st.Conditions) == 0
}

// onlyPending: PENDING_CREATE (so not refused, not failed), with nothing refused: every
// condition true but Ready and Programmed, which say it waits.
func onlyPending(st *lbv1.CommonStatus) bool {
	if st.ProvisioningStatus != lbv1.ProvisioningPendingCreate {
		return false
	}
	for _, c := range st.Conditions {
		if c.Type != lbv1.ConditionReady && c.Type != lbv1.ConditionProgrammed && c.Status != metav1.ConditionTrue {
			return false
		}
	}
	return true
}
