package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// ListenerReconciler reports a listener's acceptance (its load balancer exists, its port is
// free) and statuses.
type ListenerReconciler struct{ Base }

func (r *ListenerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return watchServed(r.watchModel(mgr, "listener", &lbv1.Listener{}, "Listener"), servedListeners).Complete(r.watched("listener", r))
}

func (r *ListenerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var l lbv1.Listener
	if err := r.Get(ctx, req.NamespacedName, &l); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	objs, res, ok := r.model.get(&l, "Listener")
	if !ok {
		return ctrl.Result{}, nil // the next build of the model queues it
	}
	adminUp := enabled(l.Spec.AdminStateUp)
	for _, lb := range objs.LoadBalancers {
		if lb.Namespace == l.Namespace && lb.Name == l.Spec.LoadBalancerRef.Name {
			adminUp = adminUp && enabled(lb.Spec.AdminStateUp)
		}
	}
	rep, err := r.served(ctx, &l, l.Spec.LoadBalancerRef.Name, servedListeners)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := lbv1.ListenerStatus{CommonStatus: r.childStatus(&l, "Listener", res, &l.Status.CommonStatus, rep,
		func(served, failed bool) lbv1.OperatingStatus {
			return ListenerOperatingStatus(adminUp, served, failed)
		})}
	if rep != nil && rep.UID == l.UID {
		st.DataPath = rep.DataPath
	}
	return r.applyChild(ctx, &l, "Listener", &l.Status.CommonStatus, &st.CommonStatus, l.Status.DataPath != st.DataPath, st)
}

func servedListeners(t *lbv1.ServedTree) []lbv1.Served { return t.Listeners }
