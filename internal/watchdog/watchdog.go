// Package watchdog turns "the reconcile loop is stuck" into a failing health check: it
// tracks the reconciliations in flight, and /healthz fails while one has run longer than a
// limit no healthy reconciliation reaches (every call to the API server or the cloud has a
// shorter timeout). kubelet then restarts the process, as it would a deadlocked one.
package watchdog

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Watchdog watches the reconciliations of one process.
type Watchdog struct {
	Limit time.Duration

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]started
}

type started struct {
	at   time.Time
	name string
}

// New returns a Watchdog that fails after limit.
func New(limit time.Duration) *Watchdog {
	return &Watchdog{Limit: limit, inflight: map[uint64]started{}}
}

// Wrap returns r, watched under name.
func (w *Watchdog) Wrap(name string, r reconcile.Reconciler) reconcile.Reconciler {
	if w == nil { // no watchdog (tests): r as it is
		return r
	}
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		done := w.Begin(name + " " + req.String())
		defer done()
		return r.Reconcile(ctx, req)
	})
}

// Begin records the start of a piece of work; the returned function records its end.
func (w *Watchdog) Begin(name string) func() {
	if w == nil {
		return func() {}
	}
	w.mu.Lock()
	id := w.next
	w.next++
	w.inflight[id] = started{time.Now(), name}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.inflight, id)
		w.mu.Unlock()
	}
}

// Check is a healthz.Checker.
func (w *Watchdog) Check(*http.Request) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.inflight {
		if d := time.Since(s.at); d > w.Limit {
			return fmt.Errorf("reconciling %s has run for %v (limit %v)", s.name, d.Round(time.Second), w.Limit)
		}
	}
	return nil
}
