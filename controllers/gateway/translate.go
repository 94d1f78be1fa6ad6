// Package gateway serves the Gateway API's layer-4 kinds with l4lb: a Gateway of a GatewayClass
// whose controllerName is l4lb's becomes one LoadBalancer, its TCP and UDP listeners become
// Listeners, and the TCPRoutes and UDPRoutes attached to them become their Pools, whose
// members are the endpoints of the routes' backend Services. Statuses follow the Gateway API
// specification. HTTP, HTTPS, TLS and GRPC listeners are refused (l4lb is layer 4).
package gateway

import (
	"fmt"
	"math"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/owned"
	"github.com/l4lb/l4lb/controllers/services"
)

// ControllerName is the GatewayClass controllerName l4lb serves.
const ControllerName gatewayv1.GatewayController = "lb.l4lb.io/gateway-controller"

// namePrefix starts the names of the objects made for a Gateway.
const namePrefix = "gw-"

// LoadBalancerName is the name of the load balancer made for the Gateway named gw.
func LoadBalancerName(gw string) string { return namePrefix + gw }

func listenerName(gw string, l gatewayv1.SectionName) string {
	return namePrefix + gw + "-" + string(l)
}

// Route is a TCPRoute or a UDPRoute, as far as attaching and serving go.
type Route struct {
	Kind     gatewayv1.Kind // TCPRoute or UDPRoute
	Meta     metav1.ObjectMeta
	Parents  []gatewayv1.ParentReference
	Backends []gatewayv1.BackendRef
}

// Key names a route across kinds.
func (r *Route) Key() string { return string(r.Kind) + "/" + r.Meta.Namespace + "/" + r.Meta.Name }

// Input is what a Gateway's objects and statuses are made from.
type Input struct {
	Gateway *gatewayv1.Gateway
	// Routes are the TCPRoutes and UDPRoutes that name the Gateway in a parentRef.
	Routes []Route
	// Namespaces by name (the routes' namespaces, for allowedRoutes selectors).
	Namespaces map[string]*corev1.Namespace
	// Services and their EndpointSlices, by namespace/name, for the routes' backends.
	Services map[types.NamespacedName]*corev1.Service
	Slices   map[types.NamespacedName][]discoveryv1.EndpointSlice
	Grants   []gatewayv1.ReferenceGrant
	// VIP is the load balancer's address once allocated; AddressProblem its VIPAllocated
	// condition when that failed.
	VIP            string
	AddressProblem *metav1.Condition
}

// Output is a Gateway's objects, its status and its routes' parent statuses (this Gateway's
// entries only, by Route.Key).
type Output struct {
	Objects owned.Objects
	Status  gatewayv1.GatewayStatus
	Parents map[string][]gatewayv1.RouteParentStatus
}

// routeKinds are the kinds a listener of each protocol takes.
var routeKinds = map[gatewayv1.ProtocolType]gatewayv1.Kind{gatewayv1.TCPProtocolType: "TCPRoute", gatewayv1.UDPProtocolType: "UDPRoute"}

func cond(typ, reason string, ok bool, gen int64, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, ObservedGeneration: gen, Message: msg}
}

// listener is a Gateway listener with what was decided about it.
type listener struct {
	spec     gatewayv1.Listener
	valid    bool
	reason   string // why not valid
	kinds    []gatewayv1.RouteGroupKind
	badKinds bool
	attached []*Route
}

func (l *listener) takes(kind gatewayv1.Kind) bool {
	for _, k := range l.kinds {
		if k.Kind == kind {
			return true
		}
	}
	return false
}

// admits says whether the listener's allowedRoutes admit a route from namespace ns.
func (l *listener) admits(gwNamespace string, ns *corev1.Namespace, routeNS string) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		from = ptr.Deref(ar.Namespaces.From, gatewayv1.NamespacesFromSame)
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		if sel == nil || ns == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && s.Matches(labels.Set(ns.Labels))
	default:
		return routeNS == gwNamespace
	}
}

func listeners(gw *gatewayv1.Gateway) []*listener {
	var out []*listener
	for _, spec := range gw.Spec.Listeners {
		l := &listener{spec: spec}
		kind, ok := routeKinds[spec.Protocol]
		if !ok {
			l.reason = fmt.Sprintf("protocol %s: l4lb serves layer 4, TCP and UDP", spec.Protocol)
			out = append(out, l)
			continue
		}
		l.valid = true
		if ar := spec.AllowedRoutes; ar != nil && len(ar.Kinds) > 0 {
			for _, k := range ar.Kinds {
				if ptr.Deref(k.Group, gatewayv1.GroupName) == gatewayv1.GroupName && k.Kind == kind {
					l.kinds = append(l.kinds, gatewayv1.RouteGroupKind{Group: ptr.To(gatewayv1.Group(gatewayv1.GroupName)), Kind: kind})
				} else {
					l.badKinds = true
				}
			}
		} else {
			l.kinds = []gatewayv1.RouteGroupKind{{Group: ptr.To(gatewayv1.Group(gatewayv1.GroupName)), Kind: kind}}
		}
		out = append(out, l)
	}
	return out
}

// names reports whether ref names gw.
func names(ref gatewayv1.ParentReference, routeNS string, gw *gatewayv1.Gateway) bool {
	return ptr.Deref(ref.Group, gatewayv1.GroupName) == gatewayv1.GroupName &&
		ptr.Deref(ref.Kind, "Gateway") == "Gateway" &&
		string(ptr.Deref(ref.Namespace, gatewayv1.Namespace(routeNS))) == gw.Namespace &&
		string(ref.Name) == gw.Name
}

// Names reports whether a route from namespace routeNS with parents names gw.
func Names(parents []gatewayv1.ParentReference, routeNS string, gw *gatewayv1.Gateway) bool {
	return slices.ContainsFunc(parents, func(p gatewayv1.ParentReference) bool { return names(p, routeNS, gw) })
}

// Translate makes a Gateway's objects and statuses.
func Translate(in Input) Output {
	gw := in.Gateway
	gen := gw.Generation
	out := Output{Parents: map[string][]gatewayv1.RouteParentStatus{}}
	ls := listeners(gw)

	// The address: one IPAddress, or one from the namespace's VIP pools.
	lb := lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: LoadBalancerName(gw.Name)},
		Spec: lbv1.LoadBalancerSpec{Description: "Gateway " + gw.Namespace + "/" + gw.Name}}
	addressOK, addressWhy := true, ""
	for i, a := range gw.Spec.Addresses {
		if t := ptr.Deref(a.Type, gatewayv1.IPAddressType); t != gatewayv1.IPAddressType || i > 0 {
			addressOK, addressWhy = false, fmt.Sprintf("spec.addresses[%d]: l4lb gives a Gateway one address, of type IPAddress", i)
			break
		}
		if a.Value != "" {
			lb.Spec.VIP = &lbv1.VIP{Address: a.Value}
		}
	}
	out.Objects.LoadBalancer = lb

	// Routes, oldest first: a listener serves its oldest route (the Gateway API's rule for
	// conflicts); the others are accepted and counted but carry no traffic.
	routes := slices.Clone(in.Routes)
	slices.SortFunc(routes, func(a, b Route) int {
		if c := a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Key(), b.Key())
	})
	for i := range routes {
		r := &routes[i]
		refReason, refMsg := in.resolve(r)
		for _, ref := range r.Parents {
			if !names(ref, r.Meta.Namespace, gw) {
				continue
			}
			accepted, reason, msg := false, string(gatewayv1.RouteReasonNoMatchingParent), "no listener of the Gateway matches sectionName and port"
			for _, l := range ls {
				if (ref.SectionName != nil && *ref.SectionName != l.spec.Name) || (ref.Port != nil && *ref.Port != l.spec.Port) {
					continue
				}
				if !l.valid || !l.takes(r.Kind) || !l.admits(gw.Namespace, in.Namespaces[r.Meta.Namespace], r.Meta.Namespace) {
					if !accepted {
						reason, msg = string(gatewayv1.RouteReasonNotAllowedByListeners), fmt.Sprintf("no matching listener takes a %s from namespace %s", r.Kind, r.Meta.Namespace)
					}
					continue
				}
				accepted, reason, msg = true, string(gatewayv1.RouteReasonAccepted), ""
				if !slices.Contains(l.attached, r) {
					l.attached = append(l.attached, r)
				}
			}
			out.Parents[r.Key()] = append(out.Parents[r.Key()], gatewayv1.RouteParentStatus{
				ParentRef:      ref,
				ControllerName: ControllerName,
				Conditions: []metav1.Condition{
					cond(string(gatewayv1.RouteConditionAccepted), reason, accepted, r.Meta.Generation, msg),
					cond(string(gatewayv1.RouteConditionResolvedRefs), refReason, refReason == string(gatewayv1.RouteReasonResolvedRefs), r.Meta.Generation, refMsg),
				},
			})
		}
	}

	// Listeners, pools and the Gateway's status.
	invalid := false
	for _, l := range ls {
		st := gatewayv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.kinds, AttachedRoutes: int32(len(l.attached))}
		if st.SupportedKinds == nil {
			st.SupportedKinds = []gatewayv1.RouteGroupKind{}
		}
		programmed := l.valid && in.VIP != ""
		if !l.valid {
			invalid = true
			st.Conditions = []metav1.Condition{
				cond(string(gatewayv1.ListenerConditionAccepted), string(gatewayv1.ListenerReasonUnsupportedProtocol), false, gen, l.reason),
				cond(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonInvalid), false, gen, l.reason),
				cond(string(gatewayv1.ListenerConditionResolvedRefs), string(gatewayv1.ListenerReasonResolvedRefs), true, gen, ""),
				cond(string(gatewayv1.ListenerConditionConflicted), string(gatewayv1.ListenerReasonNoConflicts), false, gen, ""),
			}
			out.Status.Listeners = append(out.Status.Listeners, st)
			continue
		}
		refs := cond(string(gatewayv1.ListenerConditionResolvedRefs), string(gatewayv1.ListenerReasonResolvedRefs), true, gen, "")
		if l.badKinds {
			refs = cond(string(gatewayv1.ListenerConditionResolvedRefs), string(gatewayv1.ListenerReasonInvalidRouteKinds), false, gen, "allowedRoutes.kinds: only "+string(routeKinds[l.spec.Protocol])+" is served on a "+string(l.spec.Protocol)+" listener")
		}
		prog := cond(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonProgrammed), true, gen, "")
		if !programmed {
			prog = cond(string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonPending), false, gen, "waiting for the Gateway's address")
		}
		st.Conditions = []metav1.Condition{
			cond(string(gatewayv1.ListenerConditionAccepted), string(gatewayv1.ListenerReasonAccepted), true, gen, ""),
			prog, refs,
			cond(string(gatewayv1.ListenerConditionConflicted), string(gatewayv1.ListenerReasonNoConflicts), false, gen, ""),
		}
		out.Status.Listeners = append(out.Status.Listeners, st)

		name := listenerName(gw.Name, l.spec.Name)
		proto := lbv1.ListenerTCP
		poolProto := lbv1.PoolTCP
		if l.spec.Protocol == gatewayv1.UDPProtocolType {
			proto, poolProto = lbv1.ListenerUDP, lbv1.PoolUDP
		}
		out.Objects.Listeners = append(out.Objects.Listeners, lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: name},
			Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: lb.Name}, Protocol: proto, ProtocolPort: int32(l.spec.Port)}})
		pool := lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: name},
			Spec: lbv1.PoolSpec{LoadBalancerRef: &lbv1.ObjectReference{Name: lb.Name}, ListenerRef: &lbv1.ObjectReference{Name: name},
				Protocol: poolProto, LBAlgorithm: lbv1.RoundRobin}}
		if len(l.attached) > 0 {
			pool.Spec.Members = in.members(l.attached[0], proto)
		}
		out.Objects.Pools = append(out.Objects.Pools, pool)
	}

	accepted := cond(string(gatewayv1.GatewayConditionAccepted), string(gatewayv1.GatewayReasonAccepted), true, gen, "")
	// A listener l4lb cannot serve does not refuse its Gateway, even when it has no other (the
	// specification leaves True or False to the implementation): the Gateway keeps its address
	// for the listeners it will be given, and the Gateway API's conformance suite needs its
	// HTTP-only Gateways accepted and programmed before it runs any test.
	if invalid {
		accepted = cond(string(gatewayv1.GatewayConditionAccepted), string(gatewayv1.GatewayReasonListenersNotValid), true, gen, "some listeners are not valid: see their conditions")
	}
	if !addressOK {
		accepted = cond(string(gatewayv1.GatewayConditionAccepted), string(gatewayv1.GatewayReasonUnsupportedAddress), false, gen, addressWhy)
	}
	programmed := cond(string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonProgrammed), true, gen, "")
	switch {
	case in.VIP != "":
		out.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: in.VIP}}
	case in.AddressProblem != nil:
		programmed = cond(string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonAddressNotUsable), false, gen, in.AddressProblem.Reason+": "+in.AddressProblem.Message)
	default:
		programmed = cond(string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonPending), false, gen, "waiting for an address")
	}
	if !addressOK {
		programmed = cond(string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonInvalid), false, gen, addressWhy)
	}
	out.Status.Conditions = []metav1.Condition{accepted, programmed}
	return out
}

// resolve checks a route's backends: a reason for its ResolvedRefs condition.
func (in *Input) resolve(r *Route) (reason, msg string) {
	for i, b := range r.Backends {
		if g := ptr.Deref(b.Group, ""); (g != "" && g != "core") || ptr.Deref(b.Kind, "Service") != "Service" {
			return string(gatewayv1.RouteReasonInvalidKind), fmt.Sprintf("backendRefs[%d]: only Services are backends", i)
		}
		ns := string(ptr.Deref(b.Namespace, gatewayv1.Namespace(r.Meta.Namespace)))
		if ns != r.Meta.Namespace && !in.granted(r, ns, string(b.Name)) {
			return string(gatewayv1.RouteReasonRefNotPermitted), fmt.Sprintf("backendRefs[%d]: Service %s/%s: no ReferenceGrant in %s lets a %s of %s refer to it", i, ns, b.Name, ns, r.Kind, r.Meta.Namespace)
		}
		if in.Services[types.NamespacedName{Namespace: ns, Name: string(b.Name)}] == nil {
			return string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("backendRefs[%d]: Service %s/%s not found", i, ns, b.Name)
		}
	}
	return string(gatewayv1.RouteReasonResolvedRefs), ""
}

// granted reports whether a ReferenceGrant in namespace ns lets route r refer to Service name.
func (in *Input) granted(r *Route, ns, name string) bool {
	for _, g := range in.Grants {
		if g.Namespace != ns {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == gatewayv1.GroupName && f.Kind == r.Kind && string(f.Namespace) == r.Meta.Namespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return (t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}

// members are the endpoints of a route's resolved backends, weighted so each backend gets its
// backendRef weight's share of new connections whatever its number of endpoints.
func (in *Input) members(r *Route, proto lbv1.ListenerProtocol) []lbv1.Member {
	type backend struct {
		weight  float64
		members []lbv1.Member
	}
	var bs []backend
	top := 0.0
	for _, b := range r.Backends {
		ns := string(ptr.Deref(b.Namespace, gatewayv1.Namespace(r.Meta.Namespace)))
		key := types.NamespacedName{Namespace: ns, Name: string(b.Name)}
		svc := in.Services[key]
		w := float64(ptr.Deref(b.Weight, 1))
		if svc == nil || b.Port == nil || w == 0 || (ns != r.Meta.Namespace && !in.granted(r, ns, string(b.Name))) {
			continue
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
			return p.Port == int32(*b.Port) && string(p.Protocol) == string(proto)
		})
		if i < 0 {
			continue
		}
		family := discoveryv1.AddressTypeIPv4
		if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
			family = discoveryv1.AddressTypeIPv6
		}
		ms := services.Members(in.Slices[key], svc.Spec.Ports[i], family)
		if len(ms) == 0 {
			continue
		}
		per := w / float64(len(ms))
		top = max(top, per)
		bs = append(bs, backend{per, ms})
	}
	var out []lbv1.Member
	seen := map[string]bool{}
	for _, b := range bs {
		// Member weights go up to 256: the heaviest endpoint gets 100.
		w := int32(max(1, math.Round(100*b.weight/top)))
		for _, m := range b.members {
			if ptr.Deref(m.Weight, 1) > 0 {
				m.Weight = ptr.To(w)
			}
			if seen[m.Name] {
				m.Name = fmt.Sprintf("%s-%d", m.Name, m.ProtocolPort)
			}
			if seen[m.Name] {
				continue
			}
			seen[m.Name] = true
			out = append(out, m)
		}
	}
	return out
}
