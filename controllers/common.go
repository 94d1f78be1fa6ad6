// Package controllers holds the reconcilers of the l4lb kinds. Each kind is reconciled on its
// own (no lock across a load balancer's tree): a reconciler reads the namespace's objects from
// the cache, runs them through the pure dataplane model (the same one the agents use), and
// writes its object's status by server-side apply, leaving the agents' fields alone.
package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// These reconcilers write no spec: they update a LoadBalancer only for its finalizer, and write
// statuses by server-side apply. (A ValidatingAdmissionPolicy in config/policies refuses any
// other change the controller's account would make, but to the objects controllers/services
// makes for Services.)
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=listeners;pools;healthmonitors,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers/status;listeners/status;pools/status;healthmonitors/status,verbs=get;patch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=addresspolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=vippools,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=vippools/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=nodes;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=get;list;watch

// Base is what every reconciler shares.
type Base struct {
	client.Client
	Recorder events.EventRecorder
	// Watchdog, when set, watches every reconciliation (the controller's /healthz).
	Watchdog *watchdog.Watchdog
	// model is the model the reconcilers share (Setup makes it; without it each builds its own).
	model *snapshot
	// first holds back new children's first statuses (Setup makes it; without it none waits).
	first *firstStatus
}

// watched returns r under the watchdog, if any.
func (b *Base) watched(name string, r reconcile.Reconciler) reconcile.Reconciler {
	return b.Watchdog.Wrap(name, r)
}

// event records a decision on obj for kubectl describe.
func (b *Base) event(obj client.Object, warning bool, reason, action, format string, args ...any) {
	if b.Recorder == nil {
		return
	}
	typ := "Normal"
	if warning {
		typ = "Warning"
	}
	b.Recorder.Eventf(obj, nil, typ, reason, action, format, args...)
}

// every enqueues every object of list's kind in namespace ("" for every namespace).
func (b *Base) every(ctx context.Context, list client.ObjectList, namespace string) []reconcile.Request {
	l := list.DeepCopyObject().(client.ObjectList)
	// Only the names are read: the cache's objects need no copy (one per object and event
	// was most of the controller's work with many load balancers).
	if err := b.List(ctx, l, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	items, err := meta.ExtractList(l)
	if err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(items))
	for _, it := range items {
		if o, ok := it.(client.Object); ok {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
	}
	return out
}

// namespaceOf enqueues every object of list's kind in the namespace of the object that
// changed (every namespace for a cluster-scoped one, such as an AddressPolicy): a change
// anywhere in a tree can change statuses above and below it.
func (b *Base) namespaceOf(list client.ObjectList) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return b.every(ctx, list, obj.GetNamespace())
	})
}

// watchModel builds a controller for forObj, a listener, pool or health monitor: queued by
// its own changes, and by a build of the shared model that changed its verdict (snapshot).
// Several reconcile at once: each is mostly a round trip to the API server. The caller
// completes it.
func (b *Base) watchModel(mgr ctrl.Manager, name string, forObj client.Object, kind string) *builder.Builder {
	return ctrl.NewControllerManagedBy(mgr).Named(name).WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		// Every update of its own object queues it; those that change the model's input are
		// counted first. (What the agents serve comes on the load balancer: watchServed.)
		For(forObj, builder.WithPredicates(b.model.changed())).
		WatchesRawSource(source.Channel(b.model.queues[kind], &handler.EnqueueRequestForObject{}))
}

// acceptance is the Accepted condition of ref from a built model.
func acceptance(obj client.Object, res model.Result, kind string) (metav1.Condition, bool) {
	if p, bad := res.Problems[model.Ref{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}]; bad {
		return condition(obj, lbv1.ConditionAccepted, false, p.Reason, p.Message), false
	}
	return condition(obj, lbv1.ConditionAccepted, true, lbv1.ReasonAccepted, ""), true
}

// noteAcceptance records an event when an object is refused, or accepted after a refusal. An
// object accepted at once gets none: its condition says so, and an event for each object of a
// thousand-load-balancer apply was most of what the API server wrote (docs/benchmarks.md,
// "Scale").
func (b *Base) noteAcceptance(obj client.Object, old []metav1.Condition, c metav1.Condition) {
	prev := meta.FindStatusCondition(old, lbv1.ConditionAccepted)
	if prev != nil && prev.Status == c.Status && prev.Reason == c.Reason {
		return
	}
	switch {
	case c.Status != metav1.ConditionTrue:
		b.event(obj, true, c.Reason, "Validate", "%s", c.Message)
	case prev != nil && prev.Status == metav1.ConditionFalse:
		b.event(obj, false, lbv1.ReasonAccepted, "Validate", "accepted")
	}
}
