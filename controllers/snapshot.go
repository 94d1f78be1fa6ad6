package controllers

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/load"
	"github.com/l4lb/l4lb/internal/model"
)

// snapshot is the model of every namespace, built by one goroutine (Start) and shared by the
// listener, pool and health monitor reconcilers. Each needs the whole cluster's model (one
// listener per VIP, protocol and port cluster-wide), and reading and building it is
// proportional to the number of objects: built for each reconciliation, 1,000 load balancers
// cost a million objects read (docs/benchmarks.md, "Scale").
//
// The builder builds after every change to the model's input (counted by watchInput and the
// reconcilers' own watches, before their events are queued), at most every rebuildEvery while
// the input keeps changing (a burst of applies), and at most a tenth of the time when builds
// take longer than a tenth of that: a build reads every object, so through a burst the
// builds' cost grows with its length, not with its length times the number of objects.
//
// Freshness: a reconciliation uses the model only if it was built from its object as the
// object is now (the same input: load.InputChanged); otherwise the object waits, and the next
// build queues it. After each build the objects whose verdict (what their status reads of the
// model) changed are queued too, and only those: a listener created for a pool's load balancer
// queues that pool, not every object of the namespace at every event (which made creating n
// load balancers cost n² queued reconciliations). No reconciliation is tried again on a timer.
type snapshot struct {
	changes atomic.Uint64
	kick    chan struct{} // one pending signal: the input changed since the builder looked

	mu       sync.Mutex
	built    time.Time // zero: never
	took     time.Duration
	readAt   uint64 // changes when the model's objects were read
	objects  model.Objects
	result   model.Result
	inputs   map[model.Ref]client.Object // the listeners, pools and monitors read, by ref
	verdicts map[model.Ref]verdict
	waiting  map[model.Ref]bool // reconciled before the model had them as they are

	// queues receives, by kind (a model.Ref's), the objects to reconcile again after a build.
	queues map[string]chan event.GenericEvent
}

const (
	rebuildEvery = 200 * time.Millisecond
	buildPace    = 9
)

func newSnapshot() *snapshot {
	s := &snapshot{kick: make(chan struct{}, 1), waiting: map[model.Ref]bool{}, queues: map[string]chan event.GenericEvent{}}
	for _, kind := range []string{"Listener", "Pool", "HealthMonitor"} {
		s.queues[kind] = make(chan event.GenericEvent, 1024)
	}
	return s
}

// verdict is what a listener's, pool's or health monitor's status reads of the model besides
// the object itself: its problem, the members refused, its load balancer's admin state.
type verdict struct {
	problem   model.Problem
	refused   string
	lbEnabled bool
}

// get returns the model for reconciling obj, a listener, pool or health monitor, if the last
// build read obj as it is now (the caller must not modify it). If not, ok is false and the next
// build queues obj.
func (s *snapshot) get(obj client.Object, kind string) (objs model.Objects, res model.Result, ok bool) {
	ref := model.Ref{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, read := s.inputs[ref]; read && !load.InputChanged(in, obj) {
		return s.objects, s.result, true
	}
	s.waiting[ref] = true
	return model.Objects{}, model.Result{}, false
}

// build reads the input and builds the model, unless nothing changed since the last build, and
// returns the objects to queue: those whose verdict changed, and those waiting for it.
func (s *snapshot) build(ctx context.Context, c client.Reader) ([]model.Ref, error) {
	at := s.changes.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.built.IsZero() && s.readAt >= at {
		return nil, nil
	}
	start := time.Now()
	objs, err := load.Input(ctx, c)
	if err != nil {
		return nil, err
	}
	s.objects, s.result, s.readAt, s.built = objs, model.Build(objs), at, time.Now()
	s.took = s.built.Sub(start)
	s.inputs = inputsOf(s.objects)
	verdicts := verdictsOf(s.objects, s.result)
	var queue []model.Ref
	for ref, v := range verdicts {
		if old, ok := s.verdicts[ref]; !ok || old != v || s.waiting[ref] {
			queue = append(queue, ref)
		}
	}
	s.verdicts, s.waiting = verdicts, map[model.Ref]bool{}
	return queue, nil
}

// inputsOf indexes the listeners, pools and health monitors of objs by ref.
func inputsOf(objs model.Objects) map[model.Ref]client.Object {
	out := make(map[model.Ref]client.Object, len(objs.Listeners)+len(objs.Pools)+len(objs.Monitors))
	for i := range objs.Listeners {
		o := &objs.Listeners[i]
		out[model.Ref{Kind: "Listener", Namespace: o.Namespace, Name: o.Name}] = o
	}
	for i := range objs.Pools {
		o := &objs.Pools[i]
		out[model.Ref{Kind: "Pool", Namespace: o.Namespace, Name: o.Name}] = o
	}
	for i := range objs.Monitors {
		o := &objs.Monitors[i]
		out[model.Ref{Kind: "HealthMonitor", Namespace: o.Namespace, Name: o.Name}] = o
	}
	return out
}

// verdictsOf is every listener's, pool's and health monitor's verdict in a built model.
func verdictsOf(objs model.Objects, res model.Result) map[model.Ref]verdict {
	out := make(map[model.Ref]verdict, len(objs.Listeners)+len(objs.Pools)+len(objs.Monitors))
	lbEnabled := make(map[model.Ref]bool, len(objs.LoadBalancers))
	for _, lb := range objs.LoadBalancers {
		lbEnabled[model.Ref{Kind: "LoadBalancer", Namespace: lb.Namespace, Name: lb.Name}] = enabled(lb.Spec.AdminStateUp)
	}
	of := func(ref model.Ref) verdict {
		v := verdict{problem: res.Problems[ref]}
		if r := res.Refused[ref]; len(r) > 0 {
			v.refused = fmt.Sprint(r)
		}
		return v
	}
	for _, l := range objs.Listeners {
		ref := model.Ref{Kind: "Listener", Namespace: l.Namespace, Name: l.Name}
		v := of(ref)
		v.lbEnabled = lbEnabled[model.Ref{Kind: "LoadBalancer", Namespace: l.Namespace, Name: l.Spec.LoadBalancerRef.Name}]
		out[ref] = v
	}
	for _, p := range objs.Pools {
		ref := model.Ref{Kind: "Pool", Namespace: p.Namespace, Name: p.Name}
		out[ref] = of(ref)
	}
	for _, m := range objs.Monitors {
		ref := model.Ref{Kind: "HealthMonitor", Namespace: m.Namespace, Name: m.Name}
		out[ref] = of(ref)
	}
	return out
}

// refObject is an object of ref's kind (a listener, pool or health monitor) carrying its name,
// for the queue of its reconciler.
func refObject(ref model.Ref) client.Object {
	var obj client.Object
	switch ref.Kind {
	case "Listener":
		obj = &lbv1.Listener{}
	case "Pool":
		obj = &lbv1.Pool{}
	default:
		obj = &lbv1.HealthMonitor{}
	}
	obj.SetNamespace(ref.Namespace)
	obj.SetName(ref.Name)
	return obj
}

// Start builds the model after every change to its input, paced as snapshot says, and
// queues what each build concerns. It runs on the leader only (a manager's runnable, started
// once the caches are synced).
func (s *snapshot) Start(ctx context.Context, c client.Reader) error {
	s.count() // the first build
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		s.mu.Lock()
		wait := max(rebuildEvery, buildPace*s.took) - time.Since(s.built)
		s.mu.Unlock()
		if !sleep(ctx, wait) {
			return nil
		}
		queue, err := s.build(ctx, c)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "building the model")
			s.count() // tried again
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		for _, ref := range queue {
			select {
			case s.queues[ref.Kind] <- event.GenericEvent{Object: refObject(ref)}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// sleep waits for d, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// count records a change to the model's input and wakes the builder.
func (s *snapshot) count() {
	s.changes.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// countUpdate counts an update that changes what the model reads.
func (s *snapshot) countUpdate(old, cur client.Object) {
	if load.InputChanged(old, cur) {
		s.count()
	}
}

// changed counts the events that change what the model reads, and lets every event through.
func (s *snapshot) changed() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { s.count(); return true },
		DeleteFunc:  func(event.DeleteEvent) bool { s.count(); return true },
		GenericFunc: func(event.GenericEvent) bool { s.count(); return true },
		UpdateFunc:  func(e event.UpdateEvent) bool { s.countUpdate(e.ObjectOld, e.ObjectNew); return true },
	}
}
