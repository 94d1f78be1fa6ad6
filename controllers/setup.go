package controllers

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// Setup registers the four reconcilers with mgr; lbr carries the VIP providers. The
// listener, pool and health monitor reconcilers share one model (snapshot).
func Setup(mgr ctrl.Manager, lbr *LoadBalancerReconciler) error {
	lbr.model = &snapshot{}
	if err := lbr.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&ListenerReconciler{Base: lbr.Base}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&PoolReconciler{Base: lbr.Base}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&VIPPoolReconciler{Base: lbr.Base}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&HealthMonitorReconciler{Base: lbr.Base}).SetupWithManager(mgr)
}
