package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
)

// HealthMonitorReconciler reports a monitor's acceptance (its pool exists and takes this type,
// and has no other monitor) and statuses.
type HealthMonitorReconciler struct{ Base }

func (r *HealthMonitorReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return watchServed(r.watchModel(mgr, "healthmonitor", &lbv1.HealthMonitor{}, "HealthMonitor"), servedMonitors).Complete(r.watched("healthmonitor", r))
}

func (r *HealthMonitorReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m lbv1.HealthMonitor
	if err := r.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	objs, res, ok := r.model.get(&m, "HealthMonitor")
	if !ok {
		return ctrl.Result{}, nil // the next build of the model queues it
	}
	lbName := ""
	for i := range objs.Pools {
		if p := &objs.Pools[i]; p.Namespace == m.Namespace && p.Name == m.Spec.PoolRef.Name {
			lbName = model.PoolLoadBalancer(p, objs.Listeners)
		}
	}
	rep, err := r.served(ctx, &m, lbName, servedMonitors)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := lbv1.HealthMonitorStatus{CommonStatus: r.childStatus(&m, "HealthMonitor", res, &m.Status.CommonStatus, rep,
		func(served, _ bool) lbv1.OperatingStatus {
			if !served || !enabled(m.Spec.AdminStateUp) {
				return lbv1.OperatingOffline
			}
			return lbv1.OperatingOnline
		})}
	return r.applyChild(ctx, &m, "HealthMonitor", &m.Status.CommonStatus, &st.CommonStatus, false, st)
}

func servedMonitors(t *lbv1.ServedTree) []lbv1.Served { return t.HealthMonitors }
