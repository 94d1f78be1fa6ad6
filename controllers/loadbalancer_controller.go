package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/ssa"
	"github.com/l4lb/l4lb/controllers/vip"
)

// LoadBalancerReconciler allocates VIPs (and floating IPs) and reports the load balancer's
// statuses, cascaded from its listeners and pools.
type LoadBalancerReconciler struct {
	Base
	// Providers by name; DefaultProvider is used when spec.provider is empty.
	Providers       map[lbv1.Provider]vip.Provider
	DefaultProvider lbv1.Provider

	mu       sync.Mutex
	restored bool
}

// restorer is a provider that must learn existing allocations before making new ones.
type restorer interface{ Restore([]lbv1.LoadBalancer) }

// restore tells the providers what is already allocated, once, before the first allocation, so
// a restarted controller never gives an address twice.
func (r *LoadBalancerReconciler) restore(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.restored {
		return nil
	}
	var all lbv1.LoadBalancerList
	if err := r.List(ctx, &all); err != nil {
		return err
	}
	for _, p := range r.Providers {
		if rs, ok := p.(restorer); ok {
			rs.Restore(all.Items)
		}
	}
	r.restored = true
	return nil
}

// retryAllocation is how soon a failed allocation is tried again; the rate limiter backs off
// transient errors, this covers waits on something else changing (an address freed).
const retryAllocation = 30 * time.Second

func (r *LoadBalancerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchTree(mgr, "loadbalancer", &lbv1.LoadBalancer{}, &lbv1.LoadBalancerList{}, func(l client.ObjectList) []string {
		var n []string
		for _, o := range l.(*lbv1.LoadBalancerList).Items {
			n = append(n, o.Name)
		}
		return n
	}, r)
}

func (r *LoadBalancerReconciler) provider(lb *lbv1.LoadBalancer) (lbv1.Provider, vip.Provider) {
	name := lb.Spec.Provider
	if name == "" {
		name = r.DefaultProvider
	}
	return name, r.Providers[name]
}

func (r *LoadBalancerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var lb lbv1.LoadBalancer
	if err := r.Get(ctx, req.NamespacedName, &lb); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !lb.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, &lb)
	}
	if !controllerutil.ContainsFinalizer(&lb, lbv1.Finalizer) {
		controllerutil.AddFinalizer(&lb, lbv1.Finalizer)
		return ctrl.Result{}, r.Update(ctx, &lb)
	}
	if err := r.restore(ctx); err != nil {
		return ctrl.Result{}, err
	}
	return r.reconcileNormal(ctx, &lb)
}

// reconcileDelete releases the VIP (and what the provider made for it), then lets the object
// go. Listeners and pools the user wrote stay; they report their missing load balancer.
func (r *LoadBalancerReconciler) reconcileDelete(ctx context.Context, lb *lbv1.LoadBalancer) error {
	if !controllerutil.ContainsFinalizer(lb, lbv1.Finalizer) {
		return nil
	}
	if lb.Status.ProvisioningStatus != lbv1.ProvisioningPendingDelete {
		st := lbv1.LoadBalancerStatus{CommonStatus: lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningPendingDelete,
			OperatingStatus: lb.Status.OperatingStatus, ObservedGeneration: lb.Generation}}
		if err := ssa.ApplyStatus(ctx, r.Client, "LoadBalancer", lb.Namespace, lb.Name, ssa.ControllerManager, st); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	if _, p := r.provider(lb); p != nil {
		if err := p.Release(ctx, lb); err != nil {
			r.event(lb, true, "FailedRelease", "Release", "releasing the VIP: %v", err)
			return err
		}
		if lb.Status.VIPAddress != "" {
			r.event(lb, false, "Released", "Release", "released VIP %s", lb.Status.VIPAddress)
		}
	}
	controllerutil.RemoveFinalizer(lb, lbv1.Finalizer)
	return client.IgnoreNotFound(r.Update(ctx, lb))
}

func (r *LoadBalancerReconciler) reconcileNormal(ctx context.Context, lb *lbv1.LoadBalancer) (ctrl.Result, error) {
	st := lbv1.LoadBalancerStatus{}
	var result ctrl.Result
	var allocErr error // why the VIP or its floating IP is not there yet

	// Accepted: the provider exists here.
	name, p := r.provider(lb)
	accepted := condition(lb, lbv1.ConditionAccepted, true, lbv1.ReasonAccepted, "")
	allocated := condition(lb, lbv1.ConditionVIPAllocated, false, lbv1.ReasonPending, "")
	if p == nil {
		accepted = condition(lb, lbv1.ConditionAccepted, false, lbv1.ReasonProviderUnavailable,
			"VIP provider "+string(name)+" is not configured on this controller")
		allocated.Message = "no VIP provider"
	} else {
		alloc, err := p.Allocate(ctx, lb)
		var fipErr error
		if err != nil && alloc.Address != "" && isFloatingIPError(err) {
			err, fipErr = nil, err // the VIP exists; only the floating IP is missing
		}
		if err != nil {
			allocated = condition(lb, lbv1.ConditionVIPAllocated, false, vip.Reason(err, lbv1.ReasonAllocationFailed), err.Error())
			if prev := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionVIPAllocated); prev == nil || prev.Message != err.Error() {
				r.event(lb, true, allocated.Reason, "AllocateVIP", "%v", err)
			}
			allocErr = err
		} else {
			st.VIPAddress, st.VIPPortID = alloc.Address, alloc.PortID
			st.FloatingIPAddress, st.FloatingIPID = alloc.FloatingIPAddress, alloc.FloatingIPID
			allocated = condition(lb, lbv1.ConditionVIPAllocated, true, lbv1.ReasonAllocated, "VIP "+alloc.Address)
			if lb.Status.VIPAddress != alloc.Address {
				r.event(lb, false, lbv1.ReasonAllocated, "AllocateVIP", "allocated VIP %s", alloc.Address)
			}
			allocErr = fipErr
		}
	}
	floating := condition(lb, lbv1.ConditionFloatingIPAttached, true, lbv1.ReasonNotRequested, "no floatingIP in spec")
	if lb.Spec.FloatingIP != nil {
		switch {
		case st.FloatingIPAddress != "":
			floating = condition(lb, lbv1.ConditionFloatingIPAttached, true, lbv1.ReasonAttached, "floating IP "+st.FloatingIPAddress)
		case allocErr != nil && st.VIPAddress != "":
			floating = condition(lb, lbv1.ConditionFloatingIPAttached, false, vip.Reason(allocErr, lbv1.ReasonAttachFailed), allocErr.Error())
		default:
			floating = condition(lb, lbv1.ConditionFloatingIPAttached, false, lbv1.ReasonPending, "waiting for the VIP")
		}
	}
	if allocErr != nil {
		result.RequeueAfter = retryAllocation
	}

	// The tree below, as the other reconcilers reported it.
	objs, err := r.snapshot(ctx, lb.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	listenerOf := map[string]bool{}
	var listeners, pools []lbv1.OperatingStatus
	for _, l := range objs.Listeners {
		if l.Spec.LoadBalancerRef.Name == lb.Name && l.DeletionTimestamp.IsZero() {
			listenerOf[l.Name] = true
			listeners = append(listeners, l.Status.OperatingStatus)
		}
	}
	for _, p := range objs.Pools {
		if listenerOf[p.Spec.ListenerRef.Name] && p.DeletionTimestamp.IsZero() {
			pools = append(pools, p.Status.OperatingStatus)
		}
	}
	st.Listeners = int32(len(listeners))

	// The dataplane's part: the holder announces the VIP and serves this generation.
	announced := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionVIPAnnounced)
	announcedCond := condition(lb, lbv1.ConditionVIPAnnounced, false, lbv1.ReasonNoHolder, "no dataplane node holds the VIP yet")
	if announced != nil {
		announcedCond = *announced
	}
	isProgrammed, failed, reason, msg := programmed(lb, lb.Status.Conditions)
	programmedCond := condition(lb, lbv1.ConditionProgrammed, isProgrammed, reason, msg)

	adminUp := enabled(lb.Spec.AdminStateUp)
	st.ProvisioningStatus = ProvisioningStatus(false, accepted.Status == metav1.ConditionTrue && allocated.Status == metav1.ConditionTrue,
		isProgrammed, failed, lb.Status.ProvisioningStatus)
	st.OperatingStatus = lbv1.OperatingOffline
	if isProgrammed {
		st.OperatingStatus = LoadBalancerOperatingStatus(adminUp, listeners, pools)
	}
	st.ObservedGeneration = lb.Generation
	readyCond := ready(lb, accepted, allocated, floating, announcedCond, programmedCond)
	st.Conditions = ssa.Conditions(lb.Status.Conditions, accepted, allocated, floating, readyCond)
	r.noteAcceptance(lb, lb.Status.Conditions, accepted)

	if statusChanged(&lb.Status, &st) {
		if err := ssa.ApplyStatus(ctx, r.Client, "LoadBalancer", lb.Namespace, lb.Name, ssa.ControllerManager, st); err != nil {
			return result, err
		}
	}
	// A cloud that is down or failing is retried with the rate limiter's backoff; the
	// condition above already says which step and why.
	if vip.Reason(allocErr, "") == lbv1.ReasonProviderUnavailable {
		return ctrl.Result{}, allocErr
	}
	return result, nil
}

func isFloatingIPError(err error) bool {
	var e *vip.Error
	return errors.As(err, &e) && e.FloatingIP
}

// statusChanged compares what the controller would write with what is there.
func statusChanged(cur, next *lbv1.LoadBalancerStatus) bool {
	return cur.ProvisioningStatus != next.ProvisioningStatus || cur.OperatingStatus != next.OperatingStatus ||
		cur.ObservedGeneration != next.ObservedGeneration || cur.VIPAddress != next.VIPAddress || cur.VIPPortID != next.VIPPortID ||
		cur.FloatingIPAddress != next.FloatingIPAddress || cur.FloatingIPID != next.FloatingIPID || cur.Listeners != next.Listeners ||
		ssa.Changed(cur.Conditions, next.Conditions)
}

func enabled(b *bool) bool { return b == nil || *b }
