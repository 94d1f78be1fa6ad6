package controllers

import (
	"context"
	"sync"
	"sync/atomic"

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
type snapshot struct {
	changes atomic.Uint64

	mu      sync.Mutex
	built   bool
	readAt  uint64 // changes when the model's objects were read
	objects model.Objects
	result  model.Result
}

// get returns the current model (the caller must not modify it).
func (s *snapshot) get(ctx context.Context, c client.Reader) (model.Objects, model.Result, error) {
	want := s.changes.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.built && s.readAt >= want {
		return s.objects, s.result, nil
	}
	at := s.changes.Load()
	objs, err := load.Input(ctx, c)
	if err != nil {
		return objs, model.Result{}, err
	}
	s.objects, s.result, s.readAt, s.built = objs, model.Build(objs), at, true
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
