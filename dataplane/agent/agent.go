// Package agent is the Kubernetes side of the dataplane DaemonSet: it watches the l4lb
// objects, builds the model through the shared pure package, drives the proxy engine, makes
// held VIPs local, and reports back what it serves and how members are doing.
package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/health"
	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/load"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers;listeners;pools;healthmonitors,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=loadbalancers/status,verbs=get;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=lb.l4lb.io,resources=addresspolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=get;list;watch

// Agent serves the l4lb objects on this node.
type Agent struct {
	Client   client.Client
	Server   *proxy.Server
	VIPs     *vip.Local
	NodeName string
	// Ownership, when set, elects one node per VIP among the agents; without it this node
	// holds every load balancer no other node holds (a single-node dataplane).
	Ownership *Ownership
	// Flows, when set, carries the kernel path's connections over to a VIP's next holder.
	Flows *FlowSync
	// Watchdog, when set, watches every reconciliation (the agent's /healthz).
	Watchdog *watchdog.Watchdog

	health chan event.GenericEvent
	paced  chan event.GenericEvent // what Ownership asks to be paced (its change paced)

	reports *reporter

	mu       sync.Mutex
	reported map[types.UID]written // what was last written per object, so writes happen on change only
	lastHeld map[string]bool

	// The hand-off to the kernel (handoff.go): reconciling is held by each reconcile, and by
	// HandOff, after which none changes anything; inherited says the previous agent left
	// its listeners to the kernel at started, and this one has not taken them over yet.
	reconciling sync.Mutex
	handedOff   atomic.Bool
	inherited   bool
	started     time.Time

	// The last pass: when it ended and how long it took (pacing changed).
	lastEnd  time.Time
	lastTook time.Duration
}

// minPassGap is the least time between two passes set off by changes of the objects;
// passPace times the last pass's length is the least time when that is longer (a fifth of a
// core at most through a burst).
const (
	minPassGap = 200 * time.Millisecond
	passPace   = 4
)

// The agent reconciles everything at once (one consistent view of the model): changed, when
// the objects changed or this node took on a new load balancer, paced so that a burst of
// changes costs a bounded share of a core; promptly, when a VIP comes from or goes to
// another node or a member's health changed, which waits for nothing.
var (
	changed  = reconcile.Request{NamespacedName: client.ObjectKey{Name: "model"}}
	promptly = reconcile.Request{NamespacedName: client.ObjectKey{Name: "now"}}
)

// SetupWithManager watches the four kinds and member health.
func (a *Agent) SetupWithManager(mgr ctrl.Manager) error {
	a.health = make(chan event.GenericEvent, 64)
	a.paced = make(chan event.GenericEvent, 1)
	a.started = time.Now()
	if a.VIPs != nil {
		a.inherited, _ = nat.Exists(HandOffTable) // unreadable (no CAP_NET_ADMIN): nothing to take over
	}
	a.reported = map[types.UID]written{}
	a.reports = newReporter(a.reportAll)
	if err := mgr.Add(a.reports); err != nil {
		return err
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{changed}
	})
	now := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{promptly}
	})
	if a.Ownership != nil {
		a.Ownership.trigger = func() { a.OnHealth(health.Event{}) }
		a.Ownership.pace = func() {
			select {
			case a.paced <- event.GenericEvent{Object: &lbv1.LoadBalancer{}}:
			default: // a pass is already queued
			}
		}
		if err := mgr.Add(a.Ownership); err != nil {
			return err
		}
	}
	// Only updates that change the model's input (or a holder, which an agent without
	// gossip goes by) start a reconciliation: the statuses the agents and the controller
	// write are most updates, and each reconciliation reads and builds everything.
	input := builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		if o, ok := e.ObjectOld.(*lbv1.LoadBalancer); ok && o.Status.Holder != e.ObjectNew.(*lbv1.LoadBalancer).Status.Holder {
			return true
		}
		return load.InputChanged(e.ObjectOld, e.ObjectNew)
	}})
	return ctrl.NewControllerManagedBy(mgr).Named("dataplane").
		Watches(&lbv1.LoadBalancer{}, all, input).
		Watches(&lbv1.Listener{}, all, input).
		Watches(&lbv1.Pool{}, all, input).
		Watches(&lbv1.HealthMonitor{}, all, input).
		Watches(&lbv1.AddressPolicy{}, all, input).
		Watches(&corev1.Node{}, all, input). // a node's addresses and pod CIDRs, not its heartbeats
		WatchesRawSource(source.Channel(a.health, now)).
		WatchesRawSource(source.Channel(a.paced, all)).
		Complete(a.watched())
}

func (a *Agent) watched() reconcile.Reconciler {
	if a.Watchdog == nil {
		return a
	}
	return a.Watchdog.Wrap("dataplane", a)
}

// OnHealth is the proxy's health subscriber: a transition triggers a report.
func (a *Agent) OnHealth(health.Event) {
	select {
	case a.health <- event.GenericEvent{Object: &lbv1.Pool{}}:
	default: // a report is already queued
	}
}

func (a *Agent) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	a.reconciling.Lock()
	defer a.reconciling.Unlock()
	if a.handedOff.Load() {
		return ctrl.Result{}, nil // the kernel carries the listeners until the next agent
	}
	// A pass reads and applies every object: passes back to back through a burst of applies
	// would cost the square of its size. Changes of the objects wait after a pass passPace
	// times as long as it took, and at least minPassGap (as kube-proxy's minSyncPeriod):
	// through a burst the passes take a bounded share of a core, and get fewer as they get
	// longer, so their cost grows with the burst's length, not its square; a change after a
	// quiet spell waits for nothing.
	if wait := max(passPace*a.lastTook, minPassGap) - time.Since(a.lastEnd); req == changed && wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	start := time.Now()
	defer func() { a.lastEnd, a.lastTook = time.Now(), time.Since(start) }()
	objs, err := load.Input(ctx, a.Client)
	if err != nil {
		return ctrl.Result{}, err
	}

	// The load balancers this node holds (it answers for their VIPs and reports their
	// status) and those it serves (holder, standby, lingering: listeners bound, members probed).
	held, serving, lingering := map[string]bool{}, map[string]bool{}, map[string]bool{}
	if a.Ownership != nil {
		held, serving, lingering = a.Ownership.Held(), a.Ownership.Serving(), a.Ownership.Lingering()
	} else {
		for i := range objs.LoadBalancers {
			lb := &objs.LoadBalancers[i]
			if lb.Status.VIPAddress != "" && lb.DeletionTimestamp.IsZero() && (lb.Status.Holder == "" || lb.Status.Holder == a.NodeName) {
				held[lb.Namespace+"/"+lb.Name] = true
			}
		}
		serving = held
	}
	res := model.Build(objs)
	served := res.Model.LocalTo(a.NodeName)
	served.Listeners = slices.DeleteFunc(slices.Clone(served.Listeners), func(l model.Listener) bool { return !serving[l.LoadBalancer] })
	addrs, answer, byAddr, vipErrs := vipSets(objs, held, lingering)
	if a.VIPs == nil {
		vipErrs = map[string]error{} // this agent puts no VIP on the node
	} else if a.VIPs.Unanswer(answer) {
		// A VIP let go stops being answered, and the others hear so, before the engine is
		// reprogrammed (a listener's first health probe can hold Apply up): the node taking it
		// over waits for this node's claim to drop it.
		a.claim()
	}
	// Listeners are bound (IP_FREEBIND) before the VIP moves here, and stay a little after it
	// left: no window where a node answers for a VIP but does not listen on it.
	failed := a.Server.Apply(served)
	if a.VIPs != nil && a.Flows != nil {
		// The connections the kernel carried for a VIP's last holder go on here: their flows
		// are in conntrack before this node answers for the VIP.
		was := a.VIPs.Answered()
		for addr, on := range answer {
			if _, had := was[addr]; on && !had {
				a.Flows.Restore(addr)
			}
		}
	}
	if a.VIPs != nil {
		// Then the VIPs this node takes (or keeps lingering) are set up.
		for addr, err := range a.VIPs.Sync(addrs, answer) {
			for _, k := range byAddr[addr] {
				vipErrs[k] = err
			}
		}
	}
	a.claim()
	a.takeOver(ctrl.LoggerFrom(ctx))
	a.reports.post(snapshot{objs: objs, res: res, served: served, failed: failed, vipErrs: vipErrs, held: held})
	if len(vipErrs) > 0 {
		// A VIP that could not be set up (netlink or nftables refused, an interface not
		// there yet) is tried again with the rate limiter's backoff, not at the next change
		// of the objects; the load balancer's status says why meanwhile.
		return ctrl.Result{}, fmt.Errorf("setting up %d VIPs: %w", len(vipErrs), errors.Join(slices.Collect(maps.Values(vipErrs))...))
	}
	if a.inherited {
		// The listeners a previous agent left to the kernel are taken over after a pass that
		// finds this node joined and answering their VIPs: passes are not left to come from
		// changes of the objects, which may not come.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// reportAll writes the status of every held load balancer. It runs on the reporter's
// goroutine, never in Reconcile: a slow or stopped API server must not hold up a takeover.
func (a *Agent) reportAll(ctx context.Context, s snapshot) error {
	in := newReportInput(s)
	// Another node may have written the statuses of a load balancer while it held it: those
	// this node holds anew are written again whole rather than trusted to be as written last.
	// (Only those: forgetting everything at each change of what is held rewrote every status
	// with each of a thousand load balancers taken on.)
	a.mu.Lock()
	for i := range s.objs.LoadBalancers {
		lb := &s.objs.LoadBalancers[i]
		if k := lb.Namespace + "/" + lb.Name; s.held[k] && !a.lastHeld[k] {
			delete(a.reported, lb.UID)
		}
	}
	a.lastHeld = s.held
	a.forgetGone(s.objs)
	a.mu.Unlock()
	log := ctrl.LoggerFrom(ctx)
	// Load balancers are written side by side: one after the other, a thousand newly held
	// ones wait for a thousand round trips to an API server that is busy with them too.
	var g errgroup.Group
	g.SetLimit(reportWriters)
	for i := range s.objs.LoadBalancers {
		lb := &s.objs.LoadBalancers[i]
		if !s.held[lb.Namespace+"/"+lb.Name] {
			continue
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				return ctx.Err() // the round is over: the next one takes up what is left
			}
			err := a.report(ctx, in, lb)
			if err != nil && ctx.Err() == nil {
				log.Error(err, "reporting status", "loadBalancer", lb.Name)
			}
			return err
		})
	}
	return g.Wait()
}

// reportWriters is how many load balancers' statuses are written at once.
const reportWriters = 8

// forgetGone drops what was written for load balancers that no longer exist (only load
// balancers' statuses are written: report.go). Called with a.mu held.
func (a *Agent) forgetGone(objs model.Objects) {
	live := map[types.UID]bool{}
	for i := range objs.LoadBalancers {
		live[objs.LoadBalancers[i].UID] = true
	}
	maps.DeleteFunc(a.reported, func(uid types.UID, _ written) bool { return !live[uid] })
}

// vipSets are the VIPs this node keeps local (of held and lingering load balancers), those it
// answers for (held), and which load balancers each belongs to; errs names the load balancers
// whose address is not one.
func vipSets(objs model.Objects, held, lingering map[string]bool) (addrs, answer map[netip.Addr]bool, byAddr map[netip.Addr][]string, errs map[string]error) {
	addrs, answer, byAddr, errs = map[netip.Addr]bool{}, map[netip.Addr]bool{}, map[netip.Addr][]string{}, map[string]error{}
	for _, lb := range objs.LoadBalancers {
		k := lb.Namespace + "/" + lb.Name
		if !held[k] && !lingering[k] {
			continue
		}
		addr, err := netip.ParseAddr(lb.Status.VIPAddress)
		if err != nil {
			errs[k] = fmt.Errorf("status.vipAddress %q: %w", lb.Status.VIPAddress, err)
			continue
		}
		addrs[addr] = true
		answer[addr] = answer[addr] || held[k]
		byAddr[addr] = append(byAddr[addr], k)
	}
	return addrs, answer, byAddr, errs
}

// claim tells the other nodes which VIPs this node answers for now, once it does (or no
// longer does): they take a VIP only when no node says it answers for it.
func (a *Agent) claim() {
	if a.Ownership == nil || a.VIPs == nil {
		return
	}
	var answered []string
	for addr := range a.VIPs.Answered() {
		answered = append(answered, addr.Unmap().String())
	}
	a.Ownership.Gossip.SetClaim(answered)
}

func cond(obj metav1.Object, typ string, ok bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: obj.GetGeneration()}
}
