package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ssa"
)

// ListenerReconciler reports a listener's acceptance (its load balancer exists, its port is
// free) and statuses.
type ListenerReconciler struct{ Base }

func (r *ListenerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// One listener per VIP, protocol and port in the whole cluster: a listener's change can
	// free or take the port of a listener in another namespace.
	samePort := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		changed, ok := obj.(*lbv1.Listener)
		if !ok {
			return nil
		}
		var all lbv1.ListenerList
		if err := r.List(ctx, &all, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, l := range all.Items {
			if l.Spec.ProtocolPort == changed.Spec.ProtocolPort && l.Namespace != changed.Namespace {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l)})
			}
		}
		return out
	})
	return r.watchTree(mgr, "listener", &lbv1.Listener{}, &lbv1.ListenerList{}, controller.Options{}).
		Watches(&lbv1.Listener{}, samePort, r.modelInput(inputOnly)).
		// A node's addresses are part of the model's input (the address policy refuses them as
		// VIPs): their changes count, though they queue nothing. (A ServiceCIDR's count at the
		// next change of another input: watching it would fail on clusters without that API.)
		Watches(&corev1.Node{}, handler.Funcs{}, r.modelInput()).
		Complete(r.watched("listener", r))
}

func (r *ListenerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var l lbv1.Listener
	if err := r.Get(ctx, req.NamespacedName, &l); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	objs, res, err := r.build(ctx)
	if err != nil {
		return afterModel(err)
	}
	adminUp := enabled(l.Spec.AdminStateUp)
	for _, lb := range objs.LoadBalancers {
		if lb.Namespace == l.Namespace && lb.Name == l.Spec.LoadBalancerRef.Name {
			adminUp = adminUp && enabled(lb.Spec.AdminStateUp)
		}
	}
	st := lbv1.ListenerStatus{CommonStatus: r.childStatus(&l, "Listener", res, &l.Status.CommonStatus,
		func(served, failed bool) lbv1.OperatingStatus {
			return ListenerOperatingStatus(adminUp, served, failed)
		})}
	if !commonChanged(&l.Status.CommonStatus, &st.CommonStatus) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, ssa.ApplyStatus(ctx, r.Client, "Listener", l.Namespace, l.Name, ssa.ControllerManager, st)
}
