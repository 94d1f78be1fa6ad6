package controllers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/l4lb/l4lb/internal/load"
	"github.com/l4lb/l4lb/internal/model"
)

// snapshot is the model of every namespace, built once and shared by the reconcilers until
// something the model reads changes. Each listener, pool and health monitor needs the whole
// cluster's model (one listener per VIP, protocol and port cluster-wide), and reading and
// building it is proportional to the number of objects: built for each reconciliation, 1,000
// load balancers cost a million objects read (docs/benchmarks.md, "Scale").
//
// Freshness: every event that can start a reconciliation passes the changed predicate,
// which counts a change before the event is queued; the informer has stored the object by
// then. A reconciliation reads the count when it starts and uses a model built from a read
// that began at that count or later, so it sees at least what set it off.
//
// While the input keeps changing (a burst of applies), the model is built again at most every
// rebuildEvery: a reconciliation that needs a newer one than the last waits for the next
// (modelPending), rather than each building its own from every object.
type snapshot struct {
	changes atomic.Uint64

	mu      sync.Mutex
	built   time.Time // zero: never
	readAt  uint64    // changes when the model's objects were read
	objects model.Objects
	result  model.Result
}

const rebuildEvery = 200 * time.Millisecond

// modelPending is get's answer when the model was built less than rebuildEvery ago and the
// caller needs a newer one: the reconciliation is tried again after the wait (afterModel).
type modelPending time.Duration

func (w modelPending) Error() string {
	return "the model is built again in " + time.Duration(w).String()
}

// afterModel is a reconciliation's result for build's error: tried again when the model is.
func afterModel(err error) (ctrl.Result, error) {
	if w, ok := err.(modelPending); ok {
		return ctrl.Result{RequeueAfter: time.Duration(w)}, nil
	}
	return ctrl.Result{}, err
}

// get returns the current model (the caller must not modify it).
func (s *snapshot) get(ctx context.Context, c client.Reader) (model.Objects, model.Result, error) {
	want := s.changes.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.built.IsZero() && s.readAt >= want {
		return s.objects, s.result, nil
	}
	if wait := rebuildEvery - time.Since(s.built); wait > 0 {
		return model.Objects{}, model.Result{}, modelPending(wait)
	}
	at := s.changes.Load()
	objs, err := load.Input(ctx, c)
	if err != nil {
		return objs, model.Result{}, err
	}
	s.objects, s.result, s.readAt, s.built = objs, model.Build(objs), at, time.Now()
	return s.objects, s.result, nil
}

// changed counts the events that change what the model reads, and lets every event through.
func (s *snapshot) changed() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { s.changes.Add(1); return true },
		DeleteFunc:  func(event.DeleteEvent) bool { s.changes.Add(1); return true },
		GenericFunc: func(event.GenericEvent) bool { s.changes.Add(1); return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if load.InputChanged(e.ObjectOld, e.ObjectNew) {
				s.changes.Add(1)
			}
			return true
		},
	}
}
