package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/ssa"
)

// ListenerReconciler reports a listener's acceptance (its load balancer exists, its port is
// free) and statuses.
type ListenerReconciler struct{ Base }

func (r *ListenerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchTree(mgr, "listener", &lbv1.Listener{}, &lbv1.ListenerList{}, func(l client.ObjectList) []string {
		var n []string
		for _, o := range l.(*lbv1.ListenerList).Items {
			n = append(n, o.Name)
		}
		return n
	}, r, controller.Options{})
}

func (r *ListenerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var l lbv1.Listener
	if err := r.Get(ctx, req.NamespacedName, &l); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	objs, res, err := r.build(ctx, l.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	adminUp := enabled(l.Spec.AdminStateUp)
	for _, lb := range objs.LoadBalancers {
		if lb.Name == l.Spec.LoadBalancerRef.Name {
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
