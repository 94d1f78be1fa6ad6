package controllers

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ssa"
)

// VIPPoolReconciler reports whether each VIPPool is used: an overlap with an older pool is
// Accepted false, naming it.
type VIPPoolReconciler struct{ Base }

func (r *VIPPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// Any pool's change can end or start another's overlap.
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var pools lbv1.VIPPoolList
		if err := r.List(ctx, &pools); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, p := range pools.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).Named("vippool").For(&lbv1.VIPPool{}).Watches(&lbv1.VIPPool{}, all).Complete(r.watched("vippool", r))
}

func (r *VIPPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pools lbv1.VIPPoolList
	if err := r.List(ctx, &pools); err != nil {
		return ctrl.Result{}, err
	}
	var pool *lbv1.VIPPool
	for i := range pools.Items {
		if pools.Items[i].Name == req.Name {
			pool = &pools.Items[i]
		}
	}
	if pool == nil {
		return ctrl.Result{}, nil
	}
	accepted := condition(pool, lbv1.ConditionAccepted, true, lbv1.ReasonAccepted, "")
	if other, bad := ipam.Overlaps(pools.Items)[pool.Name]; bad {
		accepted = condition(pool, lbv1.ConditionAccepted, false, lbv1.ReasonOverlap, "its addresses overlap those of the older VIPPool "+other+"; it hands out nothing until they do not")
	}
	if !ssa.Changed(pool.Status.Conditions, []metav1.Condition{accepted}) {
		return ctrl.Result{}, nil
	}
	r.noteAcceptance(pool, pool.Status.Conditions, accepted)
	st := lbv1.VIPPoolStatus{Conditions: ssa.Conditions(pool.Status.Conditions, accepted)}
	return ctrl.Result{}, ssa.ApplyStatus(ctx, r.Client, "VIPPool", "", pool.Name, ssa.ControllerManager, st)
}
