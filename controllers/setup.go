package controllers

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// NewScheme knows the built-in kinds and the l4lb kinds.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := lbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Setup registers the four reconcilers with mgr; lbr carries the VIP providers.
func Setup(mgr ctrl.Manager, lbr *LoadBalancerReconciler) error {
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
