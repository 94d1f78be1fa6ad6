package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/load"
	"github.com/l4lb/l4lb/internal/ssa"
)

// LoadBalancerReconciler allocates VIPs (and floating IPs) and reports the load balancer's
// statuses, cascaded from its listeners and pools.
type LoadBalancerReconciler struct {
	Base
	// Providers by name; DefaultProvider is used when spec.provider is empty.
	Providers       map[lbv1.Provider]ipam.Provider
	DefaultProvider lbv1.Provider

	mu       sync.Mutex
	restored bool

	// synced remembers, by UID, the last allocation the provider confirmed and for which
	// inputs, so reconciles that change nothing the provider depends on (the dataplane's
	// status writes, say) make no call to the cloud.
	synced sync.Map
}

// syncRecord is one load balancer's last confirmed allocation.
type syncRecord struct {
	key   string // the generation, and the provider's other inputs
	alloc ipam.Allocation
	at    time.Time
}

// resyncPeriod is how often an unchanged load balancer is checked against the cloud anyway,
// which repairs what was changed there behind the controller's back.
const resyncPeriod = 10 * time.Minute

// syncTimeout bounds one whole sync with the provider (every call in it is bounded too), so a
// hung cloud holds one worker for a bounded time and never the others.
const syncTimeout = 2 * time.Minute

// workers is how many load balancers reconcile at once: one waiting on a slow cloud does not
// hold up the others.
const workers = 4

// sync asks the provider for lb's allocation, unless it confirmed the same one for the same
// inputs within resyncPeriod.
func (r *LoadBalancerReconciler) sync(ctx context.Context, lb *lbv1.LoadBalancer, p ipam.Provider) (ipam.Allocation, error) {
	key := strconv.FormatInt(lb.Generation, 10)
	if in, ok := p.(ipam.Inputs); ok {
		s, err := in.Inputs(ctx)
		if err != nil {
			return ipam.Allocation{}, err
		}
		key += "/" + s
	}
	if v, ok := r.synced.Load(lb.UID); ok {
		rec := v.(syncRecord)
		if rec.key == key && rec.alloc == allocationOf(&lb.Status) && time.Since(rec.at) < resyncPeriod {
			return rec.alloc, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		r.synced.Delete(lb.UID)
		return alloc, err
	}
	r.synced.Store(lb.UID, syncRecord{key: key, alloc: alloc, at: time.Now()})
	return alloc, nil
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

// The cache's indexes that find a load balancer's tree without reading its namespace: the
// listeners of a load balancer, the pools of a listener.
const (
	listenersOfLB   = "spec.loadBalancerRef.name"
	poolsOfListener = "spec.listenerRef.name"
)

func (r *LoadBalancerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(context.Background(), &lbv1.Listener{}, listenersOfLB, func(o client.Object) []string {
		return []string{o.(*lbv1.Listener).Spec.LoadBalancerRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(context.Background(), &lbv1.Pool{}, poolsOfListener, func(o client.Object) []string {
		if n := o.(*lbv1.Pool).Spec.ListenerName(); n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return err
	}
	// A load balancer's status is its own and its listeners' and pools' (tree): their changes
	// queue it alone, not their whole namespace. (A health monitor's reach it through its
	// pool's operating status.)
	ownerLB := handler.EnqueueRequestsFromMapFunc(r.loadBalancerOf)
	return ctrl.NewControllerManagedBy(mgr).Named("loadbalancer").For(&lbv1.LoadBalancer{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers,
			// A cloud outage is retried from 100 ms up to every 30 s, not the default's 16
			// minutes, so load balancers are in sync again within 30 s of the cloud's return.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, 30*time.Second)}).
		Watches(&lbv1.Listener{}, ownerLB).
		Watches(&lbv1.Pool{}, ownerLB).
		// The address policy may refuse a VIP anywhere; a new or changed VIP pool may be what
		// a load balancer waits for, anywhere; a namespace's labels choose the pools of its
		// load balancers.
		Watches(&lbv1.AddressPolicy{}, r.namespaceOf(&lbv1.LoadBalancerList{})).
		Watches(&lbv1.VIPPool{}, r.namespaceOf(&lbv1.LoadBalancerList{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, ns client.Object) []reconcile.Request {
			return r.every(ctx, &lbv1.LoadBalancerList{}, ns.GetName())
		})).
		Complete(r.watched("loadbalancer", r))
}

// loadBalancerOf maps a listener or pool to the load balancer whose status it is part of. An
// update maps the old object too, so a pool moved between listeners queues both.
func (r *LoadBalancerReconciler) loadBalancerOf(ctx context.Context, obj client.Object) []reconcile.Request {
	ns := obj.GetNamespace()
	named := func(name string) []reconcile.Request {
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}}
	}
	switch o := obj.(type) {
	case *lbv1.Listener:
		return named(o.Spec.LoadBalancerRef.Name)
	case *lbv1.Pool:
		var out []reconcile.Request
		if o.Spec.LoadBalancerRef != nil {
			out = named(o.Spec.LoadBalancerRef.Name)
		}
		var l lbv1.Listener
		if n := o.Spec.ListenerName(); n != "" && r.Get(ctx, client.ObjectKey{Namespace: ns, Name: n}, &l) == nil {
			out = append(out, named(l.Spec.LoadBalancerRef.Name)...)
		}
		return out
	}
	return nil
}

func (r *LoadBalancerReconciler) provider(lb *lbv1.LoadBalancer) (lbv1.Provider, ipam.Provider) {
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
		return r.reconcileDelete(ctx, &lb)
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
// go. Listeners and pools the user wrote stay; they report their missing load balancer. The
// finalizer stays while anything the status records cannot be released: a provider that
// fails, or one this controller does not run, keeps the object (and says why) rather than
// leak a port or a floating IP.
func (r *LoadBalancerReconciler) reconcileDelete(ctx context.Context, lb *lbv1.LoadBalancer) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(lb, lbv1.Finalizer) {
		return ctrl.Result{}, nil
	}
	st := ownStatus(lb)
	st.ProvisioningStatus, st.ObservedGeneration = lbv1.ProvisioningPendingDelete, lb.Generation
	name, p := r.provider(lb)
	var err error
	switch {
	case p != nil:
		err = p.Release(ctx, lb)
	case allocationOf(&lb.Status) != ipam.Allocation{}:
		err = &ipam.Error{Reason: lbv1.ReasonProviderUnavailable,
			Err: fmt.Errorf("cannot release the VIP: VIP provider %s is not configured on this controller", name)}
	}
	if err != nil {
		synced := condition(lb, lbv1.ConditionSynced, false, ipam.Reason(err, lbv1.ReasonReleaseFailed), err.Error())
		st.Conditions = ssa.Conditions(lb.Status.Conditions, replace(st.Conditions, synced)...)
		if statusChanged(&lb.Status, &st) {
			r.event(lb, true, synced.Reason, "Release", "%v", err)
			if werr := ssa.ApplyStatus(ctx, r.Client, "LoadBalancer", lb.Namespace, lb.Name, ssa.ControllerManager, st); werr != nil && !apierrors.IsNotFound(werr) {
				return ctrl.Result{}, werr
			}
		}
		if p == nil { // nothing changes until the controller does: no hot loop
			return ctrl.Result{RequeueAfter: retryAllocation}, nil
		}
		return ctrl.Result{}, err
	}
	r.synced.Delete(lb.UID)
	if p != nil && lb.Status.VIPAddress != "" {
		r.event(lb, false, "Released", "Release", "released VIP %s", lb.Status.VIPAddress)
	}
	controllerutil.RemoveFinalizer(lb, lbv1.Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, lb))
}

// ownStatus is the part of lb's status the controller writes, as it stands.
func ownStatus(lb *lbv1.LoadBalancer) lbv1.LoadBalancerStatus {
	st := lbv1.LoadBalancerStatus{CommonStatus: lbv1.CommonStatus{ProvisioningStatus: lb.Status.ProvisioningStatus,
		OperatingStatus: lb.Status.OperatingStatus, ObservedGeneration: lb.Status.ObservedGeneration},
		Listeners: lb.Status.Listeners}
	st.VIPAddress, st.VIPPortID = lb.Status.VIPAddress, lb.Status.VIPPortID
	st.VIPNetworkID, st.VIPSubnetID = lb.Status.VIPNetworkID, lb.Status.VIPSubnetID
	st.FloatingIPAddress, st.FloatingIPID = lb.Status.FloatingIPAddress, lb.Status.FloatingIPID
	for _, c := range lb.Status.Conditions {
		if controllerConditions[c.Type] {
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

// controllerConditions are the condition types the controller writes (the agent writes the
// others, under its own field manager).
var controllerConditions = map[string]bool{lbv1.ConditionAccepted: true, lbv1.ConditionVIPAllocated: true,
	lbv1.ConditionFloatingIPAttached: true, lbv1.ConditionSynced: true, lbv1.ConditionReady: true}

// replace returns conds with c in place of the condition of its type.
func replace(conds []metav1.Condition, c metav1.Condition) []metav1.Condition {
	out := []metav1.Condition{c}
	for _, o := range conds {
		if o.Type != c.Type {
			out = append(out, o)
		}
	}
	return out
}

func allocationOf(s *lbv1.LoadBalancerStatus) ipam.Allocation {
	return ipam.Allocation{Address: s.VIPAddress, PortID: s.VIPPortID, NetworkID: s.VIPNetworkID, SubnetID: s.VIPSubnetID,
		FloatingIPAddress: s.FloatingIPAddress, FloatingIPID: s.FloatingIPID}
}

// keep is what exists after a failed sync: what the provider still returned, else what the
// status recorded. A failed call says nothing about what exists, so it erases nothing.
func keep(prev, got ipam.Allocation) ipam.Allocation {
	pick := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	return ipam.Allocation{Address: pick(got.Address, prev.Address), PortID: pick(got.PortID, prev.PortID),
		NetworkID: pick(got.NetworkID, prev.NetworkID), SubnetID: pick(got.SubnetID, prev.SubnetID),
		FloatingIPAddress: pick(got.FloatingIPAddress, prev.FloatingIPAddress), FloatingIPID: pick(got.FloatingIPID, prev.FloatingIPID)}
}

// refusedVIP refuses a spec.vip.address that no load balancer may have: a node's own
// address, the pod or Service ranges, loopback, link-local and the like, unless an
// AddressPolicy allows it.
func (r *LoadBalancerReconciler) refusedVIP(ctx context.Context, lb *lbv1.LoadBalancer) error {
	if lb.Spec.VIP == nil || lb.Spec.VIP.Address == "" {
		return nil
	}
	a, err := netip.ParseAddr(lb.Spec.VIP.Address)
	if err != nil {
		return &ipam.Error{Reason: lbv1.ReasonInvalid, Err: fmt.Errorf("spec.vip.address %q is not an IP address", lb.Spec.VIP.Address)}
	}
	pol, err := load.Policy(ctx, r.Client)
	if err != nil {
		return &ipam.Error{Reason: lbv1.ReasonProviderUnavailable, Err: fmt.Errorf("reading the address policy: %w", err)}
	}
	if why := pol.VIPRefused(a); why != "" {
		return &ipam.Error{Reason: lbv1.ReasonAddressRefused, Err: fmt.Errorf("spec.vip.address: %s", why)}
	}
	return nil
}

// transient reports whether a failure may go away by itself (the cloud down or slow, a
// concurrent change): a load balancer that has no VIP yet is then still being created, not
// in ERROR.
func transient(err error) bool {
	switch ipam.Reason(err, "") {
	case lbv1.ReasonProviderUnavailable, lbv1.ReasonConflict:
		return true
	}
	return false
}

func (r *LoadBalancerReconciler) reconcileNormal(ctx context.Context, lb *lbv1.LoadBalancer) (ctrl.Result, error) {
	alloc, p, syncErr := r.allocate(ctx, lb)
	conds := r.allocationConditions(lb, alloc, p != nil, syncErr)
	listeners, pools, err := r.tree(ctx, lb)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := r.status(lb, alloc, conds, syncErr, listeners, pools)
	if statusChanged(&lb.Status, &st) {
		if err := ssa.ApplyStatus(ctx, r.Client, "LoadBalancer", lb.Namespace, lb.Name, ssa.ControllerManager, st); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case p != nil && ipam.Reason(syncErr, "") == lbv1.ReasonProviderUnavailable:
		// A cloud that is down or failing is retried with the rate limiter's backoff; the
		// conditions already say which step and why.
		return ctrl.Result{}, syncErr
	case syncErr != nil:
		return ctrl.Result{RequeueAfter: retryAllocation}, nil
	}
	return ctrl.Result{RequeueAfter: resyncPeriod}, nil
}

// allocate is the provider's part: what exists in the cloud (or the static ranges) for the
// VIP. On failure the allocation is what the status already had, so nothing is lost.
func (r *LoadBalancerReconciler) allocate(ctx context.Context, lb *lbv1.LoadBalancer) (ipam.Allocation, ipam.Provider, error) {
	name, p := r.provider(lb)
	if p == nil {
		return allocationOf(&lb.Status), nil, &ipam.Error{Reason: lbv1.ReasonProviderUnavailable, Err: fmt.Errorf("VIP provider %s is not configured on this controller", name)}
	}
	if err := r.refusedVIP(ctx, lb); err != nil {
		return allocationOf(&lb.Status), p, err
	}
	alloc, err := r.sync(ctx, lb, p)
	if err != nil {
		alloc = keep(allocationOf(&lb.Status), alloc)
	}
	return alloc, p, err
}

// allocationConds are the conditions the controller decides from an allocation.
type allocationConds struct {
	accepted, allocated, floating, synced metav1.Condition
}

// allocationConditions says what the allocation came to, and records events for changes.
func (r *LoadBalancerReconciler) allocationConditions(lb *lbv1.LoadBalancer, alloc ipam.Allocation, haveProvider bool, syncErr error) allocationConds {
	vipExists := alloc.Address != ""
	c := allocationConds{
		accepted:  condition(lb, lbv1.ConditionAccepted, true, lbv1.ReasonAccepted, ""),
		allocated: condition(lb, lbv1.ConditionVIPAllocated, true, lbv1.ReasonAllocated, "VIP "+alloc.Address),
		floating:  condition(lb, lbv1.ConditionFloatingIPAttached, true, lbv1.ReasonNotRequested, "no floatingIP in spec"),
		synced:    condition(lb, lbv1.ConditionSynced, true, lbv1.ReasonSynced, ""),
	}
	if !haveProvider && !vipExists {
		c.accepted = condition(lb, lbv1.ConditionAccepted, false, lbv1.ReasonProviderUnavailable, syncErr.Error())
	}
	if !vipExists {
		c.allocated = condition(lb, lbv1.ConditionVIPAllocated, false, ipam.Reason(syncErr, lbv1.ReasonAllocationFailed), syncErr.Error())
	}
	if lb.Spec.FloatingIP != nil {
		switch {
		case alloc.FloatingIPAddress != "":
			c.floating = condition(lb, lbv1.ConditionFloatingIPAttached, true, lbv1.ReasonAttached, "floating IP "+alloc.FloatingIPAddress)
		case syncErr != nil && vipExists:
			c.floating = condition(lb, lbv1.ConditionFloatingIPAttached, false, ipam.Reason(syncErr, lbv1.ReasonAttachFailed), syncErr.Error())
		default:
			c.floating = condition(lb, lbv1.ConditionFloatingIPAttached, false, lbv1.ReasonPending, "waiting for the VIP")
		}
	}
	if syncErr != nil {
		c.synced = condition(lb, lbv1.ConditionSynced, false, ipam.Reason(syncErr, lbv1.ReasonAllocationFailed), syncErr.Error())
		if prev := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionSynced); prev == nil || prev.Message != syncErr.Error() {
			r.event(lb, true, c.synced.Reason, "Sync", "%v", syncErr)
		}
	} else if lb.Status.VIPAddress != alloc.Address {
		r.event(lb, false, lbv1.ReasonAllocated, "AllocateVIP", "allocated VIP %s", alloc.Address)
	}
	r.noteAcceptance(lb, lb.Status.Conditions, c.accepted)
	return c
}

// tree is the operating status of the listeners and pools below lb, as the other
// reconcilers reported them.
func (r *LoadBalancerReconciler) tree(ctx context.Context, lb *lbv1.LoadBalancer) (listeners, pools []lbv1.OperatingStatus, err error) {
	// Read through the indexes, without copies: only statuses are read.
	var ls lbv1.ListenerList
	if err := r.List(ctx, &ls, client.InNamespace(lb.Namespace), client.MatchingFields{listenersOfLB: lb.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, err
	}
	for _, l := range ls.Items {
		if !l.DeletionTimestamp.IsZero() {
			continue
		}
		listeners = append(listeners, l.Status.OperatingStatus)
		var ps lbv1.PoolList
		if err := r.List(ctx, &ps, client.InNamespace(lb.Namespace), client.MatchingFields{poolsOfListener: l.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, nil, err
		}
		for _, p := range ps.Items {
			// As Octavia's: a pool serving no listener is not part of the load balancer's health.
			if p.DeletionTimestamp.IsZero() {
				pools = append(pools, p.Status.OperatingStatus)
			}
		}
	}
	return listeners, pools, nil
}

// status is the controller's part of lb's status: the allocation, Octavia's statuses from
// the dataplane's report and the tree, and the conditions.
func (r *LoadBalancerReconciler) status(lb *lbv1.LoadBalancer, alloc ipam.Allocation, c allocationConds, syncErr error, listeners, pools []lbv1.OperatingStatus) lbv1.LoadBalancerStatus {
	st := lbv1.LoadBalancerStatus{}
	st.VIPAddress, st.VIPPortID = alloc.Address, alloc.PortID
	st.VIPNetworkID, st.VIPSubnetID = alloc.NetworkID, alloc.SubnetID
	st.FloatingIPAddress, st.FloatingIPID = alloc.FloatingIPAddress, alloc.FloatingIPID
	st.Listeners = int32(len(listeners))
	vipExists := alloc.Address != ""

	// The dataplane's part: the holder announces the VIP and serves this generation.
	announcedCond := condition(lb, lbv1.ConditionVIPAnnounced, false, lbv1.ReasonNoHolder, "no dataplane node holds the VIP yet")
	if announced := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionVIPAnnounced); announced != nil {
		announcedCond = *announced
	}
	isProgrammed, failed, reason, msg := programmed(lb, lb.Status.Conditions)
	programmedCond := condition(lb, lbv1.ConditionProgrammed, isProgrammed, reason, msg)

	// A load balancer whose VIP exists is as its dataplane serves it, whatever the cloud does
	// now (Octavia likewise puts a load balancer back to ACTIVE when a later change fails); one
	// without a VIP is still being created while the failure may pass, and ERROR otherwise.
	buildable := c.accepted.Status == metav1.ConditionTrue && (vipExists || transient(syncErr))
	st.ProvisioningStatus = ProvisioningStatus(false, buildable, isProgrammed && vipExists, failed, lb.Status.ProvisioningStatus)
	st.OperatingStatus = lbv1.OperatingOffline
	if isProgrammed {
		st.OperatingStatus = LoadBalancerOperatingStatus(enabled(lb.Spec.AdminStateUp), listeners, pools)
	}
	st.ObservedGeneration = lb.Generation
	// Ready and kstatus's conditions name the same first unmet condition, so they change
	// together (one write).
	awaited := []metav1.Condition{c.accepted, c.allocated, c.floating, announcedCond, programmedCond}
	readyCond := ready(lb, awaited...)
	conds := append([]metav1.Condition{c.accepted, c.allocated, c.floating, c.synced, readyCond},
		progress(lb, st.ProvisioningStatus, awaited...)...)
	st.Conditions = ssa.Conditions(lb.Status.Conditions, conds...)
	return st
}

func statusChanged(cur, next *lbv1.LoadBalancerStatus) bool {
	return cur.ProvisioningStatus != next.ProvisioningStatus || cur.OperatingStatus != next.OperatingStatus ||
		cur.ObservedGeneration != next.ObservedGeneration || cur.VIPAddress != next.VIPAddress || cur.VIPPortID != next.VIPPortID ||
		cur.VIPNetworkID != next.VIPNetworkID || cur.VIPSubnetID != next.VIPSubnetID ||
		cur.FloatingIPAddress != next.FloatingIPAddress || cur.FloatingIPID != next.FloatingIPID || cur.Listeners != next.Listeners ||
		ssa.Changed(cur.Conditions, next.Conditions)
}

func enabled(b *bool) bool { return b == nil || *b }
