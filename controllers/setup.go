package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Setup registers the reconcilers with mgr; lbr carries the VIP providers. The listener,
// pool and health monitor reconcilers share one model (snapshot), built on the leader.
func Setup(mgr ctrl.Manager, lbr *LoadBalancerReconciler) error {
	s := newSnapshot()
	lbr.model = s
	lbr.first = newFirstStatus()
	if err := s.watchInput(mgr); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return s.Start(ctx, mgr.GetClient()) })); err != nil {
		return err
	}
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

// watchInput counts every change to what the model reads (snapshot.changed): the four kinds,
// the address policies and the nodes' addresses. (A ServiceCIDR's change counts at the next
// change of another input: watching it would fail on clusters without that API.)
func (s *snapshot) watchInput(mgr ctrl.Manager) error {
	for _, obj := range []client.Object{&lbv1.LoadBalancer{}, &lbv1.Listener{}, &lbv1.Pool{}, &lbv1.HealthMonitor{}, &lbv1.AddressPolicy{}, &corev1.Node{}} {
		inf, err := mgr.GetCache().GetInformer(context.Background(), obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.count() },
			DeleteFunc: func(any) { s.count() },
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(client.Object); ok {
					if c, ok := cur.(client.Object); ok {
						s.countUpdate(o, c)
					}
				}
			},
		}); err != nil {
			return err
		}
	}
	return nil
}
