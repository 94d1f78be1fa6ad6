package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// HealthMonitorReconciler reports a monitor's acceptance (its pool exists and takes this type,
// and has no other monitor) and statuses.
type HealthMonitorReconciler struct{ Base }

func (r *HealthMonitorReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchModel(mgr, "healthmonitor", &lbv1.HealthMonitor{}, "HealthMonitor").Complete(r.watched("healthmonitor", r))
}

func (r *HealthMonitorReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m lbv1.HealthMonitor
	if err := r.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	_, res, ok := r.model.get(&m, "HealthMonitor")
	if !ok {
		return ctrl.Result{}, nil // the next build of the model queues it
	}
	st := lbv1.HealthMonitorStatus{CommonStatus: r.childStatus(&m, "HealthMonitor", res, &m.Status.CommonStatus,
		func(served, _ bool) lbv1.OperatingStatus {
			if !served || !enabled(m.Spec.AdminStateUp) {
				return lbv1.OperatingOffline
			}
			return lbv1.OperatingOnline
		})}
	return r.applyChild(ctx, &m, "HealthMonitor", &m.Status.CommonStatus, &st.CommonStatus, false, st)
}
