package gateway

import (
	"context"
	"errors"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/owned"
	"github.com/l4lb/l4lb/internal/watchdog"
)

// The Gateway controller reads the Gateway API's kinds and the routes' backend Services,
// writes only their statuses, and writes the l4lb objects it makes for Gateways (the admission
// policy in config/policies lets it change only objects a Gateway controls).
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses;gateways;tcproutes;udproutes;referencegrants,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses/status;gateways/status;tcproutes/status;udproutes/status,verbs=get;update;patch

// Label names, on every object made for a Gateway, that Gateway.
const Label = "lb.l4lb.io/gateway"

const fieldManager = "l4lb-gateway"

// Reconciler keeps each Gateway of l4lb's classes served and its routes' statuses current.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	Watchdog *watchdog.Watchdog
}

// Setup registers the GatewayClass and Gateway controllers, when the cluster has the Gateway
// API's kinds (l4lb installs none of them: they are the cluster's). Without them it logs so
// and serves no Gateway; installing them later needs a restart of the controller.
func Setup(mgr ctrl.Manager, c client.Client, rec events.EventRecorder, dog *watchdog.Watchdog) error {
	for _, kind := range []string{"GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant"} {
		if _, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gatewayv1.GroupName, Kind: kind}, "v1"); err != nil {
			mgr.GetLogger().Info("the Gateway API's kinds are not installed at v1 (Gateway API 1.6 or later): no Gateway is served", "missing", kind)
			return nil
		}
	}
	if err := (&ClassReconciler{Client: c}).SetupWithManager(mgr, dog); err != nil {
		return err
	}
	return (&Reconciler{Client: c, Recorder: rec, Watchdog: dog}).SetupWithManager(mgr)
}

func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	// Routes: the Gateways they name now, and those whose status still lists them.
	byRoute := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		var parents []gatewayv1.ParentReference
		var status []gatewayv1.RouteParentStatus
		switch rt := o.(type) {
		case *gatewayv1.TCPRoute:
			parents, status = rt.Spec.ParentRefs, rt.Status.Parents
		case *gatewayv1.UDPRoute:
			parents, status = rt.Spec.ParentRefs, rt.Status.Parents
		}
		for _, s := range status {
			parents = append(parents, s.ParentRef)
		}
		var out []reconcile.Request
		for _, p := range parents {
			if orDefault(p.Group, gatewayv1.GroupName) == gatewayv1.GroupName && orDefault(p.Kind, "Gateway") == "Gateway" {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{
					Namespace: string(orDefault(p.Namespace, gatewayv1.Namespace(o.GetNamespace()))), Name: string(p.Name)}})
			}
		}
		return out
	})
	// Anything a route's backends or grants depend on: every Gateway (a cluster has few).
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var gws gatewayv1.GatewayList
		if err := r.List(ctx, &gws); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, g := range gws.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&g)})
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).Named("gateway").For(&gatewayv1.Gateway{}).
		Owns(&lbv1.LoadBalancer{}).Owns(&lbv1.Listener{}).
		Watches(&gatewayv1.TCPRoute{}, byRoute).Watches(&gatewayv1.UDPRoute{}, byRoute).
		Watches(&gatewayv1.ReferenceGrant{}, all).Watches(&gatewayv1.GatewayClass{}, all).
		Watches(&corev1.Service{}, all).Watches(&discoveryv1.EndpointSlice{}, all).
		Complete(r.Watchdog.Wrap("gateway", r))
}

func orDefault[T ~string](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func (r *Reconciler) writer() *owned.Writer {
	return &owned.Writer{Client: r.Client, FieldManager: fieldManager, Label: Label, Owner: schema.GroupVersion(gatewayv1.GroupVersion).WithKind("Gateway")}
}

// ours reports whether gw's class is served by l4lb.
func (r *Reconciler) ours(ctx context.Context, gw *gatewayv1.Gateway) (bool, error) {
	var gc gatewayv1.GatewayClass
	if err := r.Get(ctx, client.ObjectKey{Name: string(gw.Spec.GatewayClassName)}, &gc); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return gc.Spec.ControllerName == ControllerName, nil
}

func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var gw gatewayv1.Gateway
	err := r.Get(ctx, req.NamespacedName, &gw)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	mine := false
	if err == nil && gw.DeletionTimestamp == nil {
		if mine, err = r.ours(ctx, &gw); err != nil {
			return ctrl.Result{}, err
		}
	}
	if !mine {
		// Gone, deleting or not ours (any more): its objects go (the garbage collector takes
		// them too) and the routes forget it.
		gw.Namespace, gw.Name = req.Namespace, req.Name
		if gw.UID != "" {
			if err := r.writer().Release(ctx, &gw); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, r.routeStatuses(ctx, &gw, nil)
	}
	in, err := r.input(ctx, &gw)
	if err != nil {
		return ctrl.Result{}, err
	}
	out := Translate(in)
	if err := r.writer().Apply(ctx, &gw, out.Objects); err != nil {
		var ref *owned.Refusal
		if !errors.As(err, &ref) {
			return ctrl.Result{}, err
		}
		// Say it on the Gateway: not Programmed, with the reason.
		out.Status.Conditions[1] = cond(string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonInvalid), false, gw.Generation, ref.Error())
		if r.Recorder != nil {
			r.Recorder.Eventf(&gw, nil, corev1.EventTypeWarning, ref.Reason, "Reconcile", "%v", ref.Err)
		}
	}
	if err := r.gatewayStatus(ctx, &gw, out.Status); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.routeStatuses(ctx, &gw, out.Parents)
}

// input reads what a Gateway's translation needs.
func (r *Reconciler) input(ctx context.Context, gw *gatewayv1.Gateway) (Input, error) {
	in := Input{Gateway: gw, Namespaces: map[string]*corev1.Namespace{},
		Services: map[types.NamespacedName]*corev1.Service{}, Slices: map[types.NamespacedName][]discoveryv1.EndpointSlice{}}
	var tcp gatewayv1.TCPRouteList
	var udp gatewayv1.UDPRouteList
	var grants gatewayv1.ReferenceGrantList
	for _, l := range []client.ObjectList{&tcp, &udp, &grants} {
		if err := r.List(ctx, l); err != nil {
			return in, err
		}
	}
	in.Grants = grants.Items
	for _, rt := range tcp.Items {
		if Names(rt.Spec.ParentRefs, rt.Namespace, gw) {
			route := Route{Kind: "TCPRoute", Meta: rt.ObjectMeta, Parents: rt.Spec.ParentRefs}
			for _, rule := range rt.Spec.Rules {
				route.Backends = append(route.Backends, rule.BackendRefs...)
			}
			in.Routes = append(in.Routes, route)
		}
	}
	for _, rt := range udp.Items {
		if Names(rt.Spec.ParentRefs, rt.Namespace, gw) {
			route := Route{Kind: "UDPRoute", Meta: rt.ObjectMeta, Parents: rt.Spec.ParentRefs}
			for _, rule := range rt.Spec.Rules {
				route.Backends = append(route.Backends, rule.BackendRefs...)
			}
			in.Routes = append(in.Routes, route)
		}
	}
	for _, rt := range in.Routes {
		if _, ok := in.Namespaces[rt.Meta.Namespace]; !ok {
			var ns corev1.Namespace
			if err := r.Get(ctx, client.ObjectKey{Name: rt.Meta.Namespace}, &ns); err == nil {
				in.Namespaces[ns.Name] = &ns
			}
		}
		for _, b := range rt.Backends {
			key := types.NamespacedName{Namespace: string(orDefault(b.Namespace, gatewayv1.Namespace(rt.Meta.Namespace))), Name: string(b.Name)}
			if _, ok := in.Services[key]; ok {
				continue
			}
			var svc corev1.Service
			if err := r.Get(ctx, key, &svc); err != nil {
				if client.IgnoreNotFound(err) != nil {
					return in, err
				}
				continue
			}
			in.Services[key] = &svc
			var slices discoveryv1.EndpointSliceList
			if err := r.List(ctx, &slices, client.InNamespace(key.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: key.Name}); err != nil {
				return in, err
			}
			in.Slices[key] = slices.Items
		}
	}
	var lb lbv1.LoadBalancer
	if err := r.Get(ctx, client.ObjectKey{Namespace: gw.Namespace, Name: LoadBalancerName(gw.Name)}, &lb); err == nil && metav1.IsControlledBy(&lb, gw) {
		in.VIP = lb.Status.VIPAddress
		if c := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionVIPAllocated); c != nil && c.Status == metav1.ConditionFalse {
			in.AddressProblem = c
		}
	}
	return in, nil
}

// setConditions returns cur with next's conditions set, keeping the transition times of those
// that did not change.
func setConditions(cur, next []metav1.Condition) []metav1.Condition {
	out := slices.Clone(cur)
	for _, c := range next {
		meta.SetStatusCondition(&out, c)
	}
	return out
}

func (r *Reconciler) gatewayStatus(ctx context.Context, gw *gatewayv1.Gateway, st gatewayv1.GatewayStatus) error {
	next := gw.DeepCopy()
	next.Status.Addresses = st.Addresses
	next.Status.Conditions = setConditions(gw.Status.Conditions, st.Conditions)
	var ls []gatewayv1.ListenerStatus
	for _, l := range st.Listeners {
		i := slices.IndexFunc(gw.Status.Listeners, func(o gatewayv1.ListenerStatus) bool { return o.Name == l.Name })
		if i >= 0 {
			l.Conditions = setConditions(gw.Status.Listeners[i].Conditions, l.Conditions)
		} else {
			l.Conditions = setConditions(nil, l.Conditions)
		}
		ls = append(ls, l)
	}
	next.Status.Listeners = ls
	if equality.Semantic.DeepEqual(next.Status, gw.Status) {
		return nil
	}
	return r.Status().Update(ctx, next)
}

// routeStatuses writes this Gateway's entries in its routes' statuses (parents: nil removes
// them from every route).
func (r *Reconciler) routeStatuses(ctx context.Context, gw *gatewayv1.Gateway, parents map[string][]gatewayv1.RouteParentStatus) error {
	// An entry is this Gateway's when l4lb wrote it for a parentRef naming the Gateway.
	merge := func(key, routeNS string, cur []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
		out := []gatewayv1.RouteParentStatus{} // the field is required: empty, never null
		for _, p := range cur {
			if p.ControllerName != ControllerName || !names(p.ParentRef, routeNS, gw) {
				out = append(out, p)
			}
		}
		for _, p := range parents[key] {
			if i := slices.IndexFunc(cur, func(o gatewayv1.RouteParentStatus) bool {
				return o.ControllerName == ControllerName && equality.Semantic.DeepEqual(o.ParentRef, p.ParentRef)
			}); i >= 0 {
				p.Conditions = setConditions(cur[i].Conditions, p.Conditions)
			} else {
				p.Conditions = setConditions(nil, p.Conditions)
			}
			out = append(out, p)
		}
		return out
	}
	// One write per route whose entries changed, whatever its kind.
	update := func(kind string, rt client.Object, parents *[]gatewayv1.RouteParentStatus) error {
		next := merge(kind+"/"+rt.GetNamespace()+"/"+rt.GetName(), rt.GetNamespace(), *parents)
		if sameParents(next, *parents) {
			return nil
		}
		*parents = next
		return r.Status().Update(ctx, rt)
	}
	var tcp gatewayv1.TCPRouteList
	var udp gatewayv1.UDPRouteList
	if err := r.List(ctx, &tcp); err != nil {
		return err
	}
	if err := r.List(ctx, &udp); err != nil {
		return err
	}
	for i := range tcp.Items {
		if err := update("TCPRoute", &tcp.Items[i], &tcp.Items[i].Status.Parents); err != nil {
			return err
		}
	}
	for i := range udp.Items {
		if err := update("UDPRoute", &udp.Items[i], &udp.Items[i].Status.Parents); err != nil {
			return err
		}
	}
	log.FromContext(ctx).V(1).Info("routes updated", "gateway", gw.Name)
	return nil
}

func sameParents(a, b []gatewayv1.RouteParentStatus) bool {
	return len(a) == len(b) && (len(a) == 0 || equality.Semantic.DeepEqual(a, b))
}

// ClassReconciler accepts the GatewayClasses whose controllerName is l4lb's.
type ClassReconciler struct {
	client.Client
}

func (r *ClassReconciler) SetupWithManager(mgr ctrl.Manager, dog *watchdog.Watchdog) error {
	return ctrl.NewControllerManagedBy(mgr).Named("gatewayclass").For(&gatewayv1.GatewayClass{}).Complete(dog.Wrap("gatewayclass", r))
}

// SupportedFeatures are the Gateway API features l4lb claims (and the conformance suite runs).
var SupportedFeatures = []gatewayv1.FeatureName{"Gateway", "ReferenceGrant", "TCPRoute", "UDPRoute"}

func (r *ClassReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var gc gatewayv1.GatewayClass
	if err := r.Get(ctx, req.NamespacedName, &gc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if gc.Spec.ControllerName != ControllerName {
		return ctrl.Result{}, nil
	}
	next := gc.DeepCopy()
	next.Status.Conditions = setConditions(gc.Status.Conditions, []metav1.Condition{
		cond(string(gatewayv1.GatewayClassConditionStatusAccepted), string(gatewayv1.GatewayClassReasonAccepted), true, gc.Generation, ""),
		cond(string(gatewayv1.GatewayClassConditionStatusSupportedVersion), string(gatewayv1.GatewayClassReasonSupportedVersion), true, gc.Generation, ""),
	})
	next.Status.SupportedFeatures = nil
	for _, f := range SupportedFeatures {
		next.Status.SupportedFeatures = append(next.Status.SupportedFeatures, gatewayv1.SupportedFeature{Name: f})
	}
	if equality.Semantic.DeepEqual(next.Status, gc.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Status().Update(ctx, next)
}
