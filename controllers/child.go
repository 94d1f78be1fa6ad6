package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/ssa"
)

// childStatus computes Accepted, reads how the dataplane serves obj (rep, its entry in its
// load balancer's report, nil when none) and builds the common status; operating is the kind's
// own operating status given whether the dataplane serves it.
func (b *Base) childStatus(obj client.Object, kind string, res model.Result, cur *lbv1.CommonStatus, rep *lbv1.Served,
	operating func(programmed, failed bool) lbv1.OperatingStatus) lbv1.CommonStatus {
	accepted, ok := acceptance(obj, res, kind)
	b.noteAcceptance(obj, cur.Conditions, accepted)
	isProgrammed, failed, reason, msg := reported(obj, rep)
	prog := condition(obj, lbv1.ConditionProgrammed, isProgrammed, reason, msg)
	st := lbv1.CommonStatus{
		ProvisioningStatus: ProvisioningStatus(!obj.GetDeletionTimestamp().IsZero(), ok, isProgrammed, failed, cur.ProvisioningStatus),
		OperatingStatus:    operating(isProgrammed, failed),
		ObservedGeneration: obj.GetGeneration(),
	}
	conds := append([]metav1.Condition{accepted, prog, ready(obj, accepted, prog)}, progress(obj, st.ProvisioningStatus, accepted, prog)...)
	st.Conditions = ssa.Conditions(cur.Conditions, conds...)
	return st
}

// served is obj's entry in the report of load balancer lbName (in obj's namespace) that pick
// selects, nil when there is none.
func (b *Base) served(ctx context.Context, obj client.Object, lbName string, pick func(*lbv1.ServedTree) []lbv1.Served) (*lbv1.Served, error) {
	if lbName == "" {
		return nil, nil
	}
	var lb lbv1.LoadBalancer
	if err := b.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: lbName}, &lb); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if lb.Status.Served == nil {
		return fromOwnStatus(obj), nil
	}
	for _, s := range pick(lb.Status.Served) {
		if s.Name == obj.GetName() {
			return &s, nil
		}
	}
	return nil, nil
}

// fromOwnStatus is obj's report as agents wrote it before status.served, on obj's own status
// (Programmed, dataPath, members): read while the holder of its load balancer writes no
// report, as during an upgrade until the new agents run (nil without one).
func fromOwnStatus(obj client.Object) *lbv1.Served {
	var rep *lbv1.Served
	switch o := obj.(type) {
	case *lbv1.Listener:
		if rep = asServed(o, o.Status.Conditions); rep != nil {
			rep.DataPath = o.Status.DataPath
		}
	case *lbv1.Pool:
		if rep = asServed(o, o.Status.Conditions); rep != nil {
			rep.Members = o.Status.Members
		}
	case *lbv1.HealthMonitor:
		rep = asServed(o, o.Status.Conditions)
	}
	return rep
}

// watchServed queues the children of a kind (pick) a load balancer's report names when their
// part of it changes: the agents report on the load balancer only.
func watchServed(bld *builder.Builder, pick func(*lbv1.ServedTree) []lbv1.Served) *builder.Builder {
	of := func(o client.Object) []lbv1.Served {
		lb, ok := o.(*lbv1.LoadBalancer)
		if !ok || lb.Status.Served == nil {
			return nil
		}
		return pick(lb.Status.Served)
	}
	changed := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false }, // the children are queued by their own creation
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !equality.Semantic.DeepEqual(of(e.ObjectOld), of(e.ObjectNew))
		},
	}
	return bld.Watches(&lbv1.LoadBalancer{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, s := range of(o) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: s.Name}})
		}
		return out
	}), builder.WithPredicates(changed))
}

func commonChanged(cur, next *lbv1.CommonStatus) bool {
	return cur.ProvisioningStatus != next.ProvisioningStatus || cur.OperatingStatus != next.OperatingStatus ||
		cur.ObservedGeneration != next.ObservedGeneration || ssa.Changed(cur.Conditions, next.Conditions)
}

// applyChild writes a child's status st, whose common part is next, when it differs from cur
// (or changed says it does), unless it is a first status that may still wait (firstStatus).
func (b *Base) applyChild(ctx context.Context, obj client.Object, kind string, cur, next *lbv1.CommonStatus, changed bool, st any) (ctrl.Result, error) {
	if !changed && !commonChanged(cur, next) {
		return ctrl.Result{}, nil
	}
	if wait := b.first.hold(obj, cur, next, time.Now()); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{}, ssa.ApplyStatus(ctx, b.Client, kind, obj.GetNamespace(), obj.GetName(), ssa.ControllerManager, st)
}
