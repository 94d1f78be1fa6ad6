package gateway

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func gw(listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "edge", Generation: 3},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "l4lb", Listeners: listeners}}
}

func tcpListener(name string, port int32) gatewayv1.Listener {
	return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Protocol: gatewayv1.TCPProtocolType, Port: gatewayv1.PortNumber(port)}
}

func route(ns, name string, age int, parents []gatewayv1.ParentReference, backends ...gatewayv1.BackendRef) Route {
	return Route{Kind: "TCPRoute", Meta: metav1.ObjectMeta{Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(time.Unix(1000000-int64(age), 0))}, Parents: parents, Backends: backends}
}

func parentOf(section string) []gatewayv1.ParentReference {
	p := gatewayv1.ParentReference{Name: "edge", Namespace: ptr.To(gatewayv1.Namespace("infra"))}
	if section != "" {
		p.SectionName = ptr.To(gatewayv1.SectionName(section))
	}
	return []gatewayv1.ParentReference{p}
}

func backendRef(name string, weight int32) gatewayv1.BackendRef {
	return gatewayv1.BackendRef{Weight: &weight, BackendObjectReference: gatewayv1.BackendObjectReference{
		Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(3000))}}
}

// backends makes Services of port 3000 in namespace infra, each with n endpoints.
func backends(in *Input, counts map[string]int) {
	in.Services, in.Slices = map[types.NamespacedName]*corev1.Service{}, map[types.NamespacedName][]discoveryv1.EndpointSlice{}
	for name, n := range counts {
		key := types.NamespacedName{Namespace: "infra", Name: name}
		in.Services[key] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 3000}}}}
		s := discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(3000))}}}
		for i := range n {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0." + string(rune('0'+len(name))) + "." + string(rune('1'+i))},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: name + "-" + string(rune('a'+i))}})
		}
		in.Slices[key] = []discoveryv1.EndpointSlice{s}
	}
}

func parentCond(t *testing.T, out Output, r Route, typ string) *metav1.Condition {
	t.Helper()
	ps := out.Parents[r.Key()]
	if len(ps) != 1 {
		t.Fatalf("route %s: %d parent statuses", r.Meta.Name, len(ps))
	}
	return meta.FindStatusCondition(ps[0].Conditions, typ)
}

// A backendRef's weight is its Service's share, however many endpoints each has.
func TestWeightsAreSharesOfBackendsNotOfEndpoints(t *testing.T) {
	in := Input{Gateway: gw(tcpListener("tcp", 80))}
	backends(&in, map[string]int{"one": 1, "four": 4})
	in.Routes = []Route{route("infra", "r", 0, parentOf("tcp"), backendRef("one", 1), backendRef("four", 1))}
	out := Translate(in)
	weights := map[string]int32{}
	for _, m := range out.Objects.Pools[0].Spec.Members {
		weights[m.Name] = *m.Weight
	}
	if len(weights) != 5 || weights["one-a"] != 100 || weights["four-a"] != 25 || weights["four-d"] != 25 {
		t.Fatalf("weights %v: one's single endpoint should weigh as much as four's four together", weights)
	}
	// Weight 0: not a member at all.
	in.Routes[0].Backends[1].Weight = ptr.To(int32(0))
	if ms := Translate(in).Objects.Pools[0].Spec.Members; len(ms) != 1 {
		t.Fatalf("a backend of weight 0 served: %+v", ms)
	}
}

func TestAttachmentRules(t *testing.T) {
	selected := tcpListener("selected", 81)
	selected.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromSelector),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "edge"}}}}
	in := Input{Gateway: gw(tcpListener("tcp", 80), selected, gatewayv1.Listener{Name: "web", Protocol: gatewayv1.HTTPProtocolType, Port: 8080}),
		Namespaces: map[string]*corev1.Namespace{
			"apps":  {ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{"team": "edge"}}},
			"other": {ObjectMeta: metav1.ObjectMeta{Name: "other"}}}}
	backends(&in, map[string]int{"svc": 1})
	older := route("infra", "older", 10, parentOf("tcp"), backendRef("svc", 1))
	newer := route("infra", "newer", 5, parentOf("tcp"), backendRef("svc", 1))
	// From another namespace: the default (Same) refuses it; the selector admits a labelled one.
	foreign := route("apps", "foreign", 1, parentOf("tcp"))
	selectedOK := route("apps", "selected-ok", 1, parentOf("selected"))
	selectedNo := route("other", "selected-no", 1, parentOf("selected"))
	onHTTP := route("infra", "on-http", 1, parentOf("web"))
	noSuch := route("infra", "no-such", 1, parentOf("nope"))
	missing := route("infra", "missing", 1, parentOf("tcp"), backendRef("ghost", 1))
	in.Routes = []Route{newer, older, foreign, selectedOK, selectedNo, onHTTP, noSuch, missing}
	out := Translate(in)
	for _, c := range []struct {
		r           Route
		typ, reason string
		status      metav1.ConditionStatus
	}{
		{older, "Accepted", "Accepted", metav1.ConditionTrue},
		{newer, "Accepted", "Accepted", metav1.ConditionTrue},
		{foreign, "Accepted", "NotAllowedByListeners", metav1.ConditionFalse},
		{selectedOK, "Accepted", "Accepted", metav1.ConditionTrue},
		{selectedNo, "Accepted", "NotAllowedByListeners", metav1.ConditionFalse},
		{onHTTP, "Accepted", "NotAllowedByListeners", metav1.ConditionFalse},
		{noSuch, "Accepted", "NoMatchingParent", metav1.ConditionFalse},
		{missing, "ResolvedRefs", "BackendNotFound", metav1.ConditionFalse},
		{older, "ResolvedRefs", "ResolvedRefs", metav1.ConditionTrue},
	} {
		got := parentCond(t, out, c.r, c.typ)
		if got == nil || got.Reason != c.reason || got.Status != c.status {
			t.Errorf("route %s: %s %+v, want %s %s", c.r.Meta.Name, c.typ, got, c.status, c.reason)
		}
	}
	// Three routes on listener tcp (older, newer, missing), all counted; the oldest serves.
	if n := out.Status.Listeners[0].AttachedRoutes; n != 3 {
		t.Fatalf("tcp listener: %d attached routes, want 3", n)
	}
	if ms := out.Objects.Pools[0].Spec.Members; len(ms) != 1 || ms[0].Name != "svc-a" {
		t.Fatalf("tcp pool serves %+v, want the oldest route's backend", ms)
	}
	if len(out.Objects.Listeners) != 2 {
		t.Fatalf("%d listeners made, want 2 (not the HTTP one)", len(out.Objects.Listeners))
	}
	if c := meta.FindStatusCondition(out.Status.Conditions, "Accepted"); c.Reason != "ListenersNotValid" || c.ObservedGeneration != 3 {
		t.Fatalf("Gateway Accepted %+v", c)
	}
	if c := meta.FindStatusCondition(out.Status.Conditions, "Programmed"); c.Status != metav1.ConditionFalse || c.Reason != "Pending" {
		t.Fatalf("Gateway Programmed without an address: %+v", c)
	}
}

func TestAGatewayWithNoValidListenerKeepsItsAddress(t *testing.T) {
	out := Translate(Input{Gateway: gw(gatewayv1.Listener{Name: "web", Protocol: gatewayv1.HTTPProtocolType, Port: 80}), VIP: "198.51.100.9"})
	if c := meta.FindStatusCondition(out.Status.Conditions, "Accepted"); c.Status != metav1.ConditionTrue || c.Reason != "ListenersNotValid" {
		t.Fatalf("Accepted %+v", c)
	}
	if !meta.IsStatusConditionTrue(out.Status.Conditions, "Programmed") || len(out.Status.Addresses) != 1 {
		t.Fatalf("status %+v", out.Status)
	}
	l := out.Status.Listeners[0]
	if c := meta.FindStatusCondition(l.Conditions, "Accepted"); c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedProtocol" {
		t.Fatalf("listener Accepted %+v", c)
	}
	if l.SupportedKinds == nil || len(l.SupportedKinds) != 0 {
		t.Fatalf("supportedKinds %v: an empty list, as the suite expects", l.SupportedKinds)
	}
}

func TestAddresses(t *testing.T) {
	g := gw(tcpListener("tcp", 80))
	g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "198.51.100.9"}}
	out := Translate(Input{Gateway: g, VIP: "198.51.100.9"})
	if out.Objects.LoadBalancer.Spec.VIP.Address != "198.51.100.9" || len(out.Status.Addresses) != 1 {
		t.Fatalf("address %+v, status %+v", out.Objects.LoadBalancer.Spec.VIP, out.Status.Addresses)
	}
	if !meta.IsStatusConditionTrue(out.Status.Conditions, "Programmed") {
		t.Fatalf("not programmed with its address: %+v", out.Status.Conditions)
	}
	// Refused by the VIP pools: not usable.
	out = Translate(Input{Gateway: g, AddressProblem: &metav1.Condition{Reason: "NotInPool", Message: "not in a pool"}})
	if c := meta.FindStatusCondition(out.Status.Conditions, "Programmed"); c.Reason != "AddressNotUsable" {
		t.Fatalf("Programmed %+v", c)
	}
	// A hostname: not supported.
	g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.HostnameAddressType), Value: "lb.example.com"}}
	out = Translate(Input{Gateway: g})
	if c := meta.FindStatusCondition(out.Status.Conditions, "Accepted"); c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedAddress" {
		t.Fatalf("Accepted %+v", c)
	}
}
