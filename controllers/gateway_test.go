package controllers_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/gateway"
)

// The Gateway API's layer-4 kinds against a real API server with their CRDs: what the
// Gateway makes and every status the specification asks for. test/e2e carries traffic through
// a Gateway on a real cluster; the Gateway API's conformance suite runs there too.

func backendService(ns, name string, proto corev1.Protocol, port int32, n int) []client.Object {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "p", Protocol: proto, Port: port}}}}
	return []client.Object{svc, endpointOf(ns, name, n, "p", proto, port)}
}

func endpointOf(ns, svc string, n int, portName string, proto corev1.Protocol, port int32) *discoveryv1.EndpointSlice {
	return endpoint(ns, svc, n, portName, proto, port, true, true, false)
}

// parentCondition waits until route (a TCPRoute or UDPRoute) shows the condition for gw.
func parentCondition(t *testing.T, route client.Object, gw, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s: %s %s", route.GetObjectKind().GroupVersionKind().Kind, route.GetName(), typ, reason), func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(route), route); err != nil {
			return err
		}
		var parents []gatewayv1.RouteParentStatus
		switch r := route.(type) {
		case *gatewayv1.TCPRoute:
			parents = r.Status.Parents
		case *gatewayv1.UDPRoute:
			parents = r.Status.Parents
		}
		for _, p := range parents {
			if string(p.ParentRef.Name) == gw && p.ControllerName == gateway.ControllerName {
				if c := meta.FindStatusCondition(p.Conditions, typ); c != nil && c.Status == status && c.Reason == reason {
					return nil
				}
				return fmt.Errorf("conditions %+v", p.Conditions)
			}
		}
		return fmt.Errorf("no status for Gateway %s: %+v", gw, parents)
	})
}

func listenerStatus(gw *gatewayv1.Gateway, name string) *gatewayv1.ListenerStatus {
	for i := range gw.Status.Listeners {
		if string(gw.Status.Listeners[i].Name) == name {
			return &gw.Status.Listeners[i]
		}
	}
	return nil
}

func TestGatewayWithTCPAndUDPRoutes(t *testing.T) {
	ctx := context.Background()
	ns, addr := setup(t)
	other := ns + "-backends"
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}})
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-" + ns}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}
	create(t, class)
	eventually(t, "the GatewayClass accepted", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(class), class); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(class.Status.Conditions, "Accepted") || !meta.IsStatusConditionTrue(class.Status.Conditions, "SupportedVersion") || len(class.Status.SupportedFeatures) == 0 {
			return fmt.Errorf("status %+v", class.Status)
		}
		return nil
	})

	create(t, backendService(ns, "tcp-backend", corev1.ProtocolTCP, 3000, 21)...)
	create(t, backendService(ns, "udp-backend", corev1.ProtocolUDP, 53, 22)...)
	create(t, backendService(other, "elsewhere", corev1.ProtocolTCP, 3000, 23)...)
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: gatewayv1.ObjectName(class.Name),
		Addresses:        []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: addr}},
		Listeners: []gatewayv1.Listener{
			{Name: "tcp", Protocol: gatewayv1.TCPProtocolType, Port: 8080},
			{Name: "udp", Protocol: gatewayv1.UDPProtocolType, Port: 5353},
			{Name: "cross", Protocol: gatewayv1.TCPProtocolType, Port: 8081},
			{Name: "web", Protocol: gatewayv1.HTTPProtocolType, Port: 80},
		}}}
	parent := func(section string) []gatewayv1.ParentReference {
		return []gatewayv1.ParentReference{{Name: "gw", SectionName: ptr.To(gatewayv1.SectionName(section))}}
	}
	backend := func(ns, name string, port int32) gatewayv1.BackendRef {
		ref := gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(port))}}
		if ns != "" {
			ref.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		return ref
	}
	tcp := &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tcp"}, Spec: gatewayv1.TCPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent("tcp")},
		Rules:           []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backend("", "tcp-backend", 3000)}}}}}
	udp := &gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "udp"}, Spec: gatewayv1.UDPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent("udp")},
		Rules:           []gatewayv1.UDPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backend("", "udp-backend", 53)}}}}}
	cross := &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cross"}, Spec: gatewayv1.TCPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent("cross")},
		Rules:           []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backend(other, "elsewhere", 3000)}}}}}
	// A UDPRoute on a TCP listener: not allowed there.
	misplaced := &gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "misplaced"}, Spec: gatewayv1.UDPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent("tcp")},
		Rules:           []gatewayv1.UDPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backend("", "udp-backend", 53)}}}}}
	create(t, gw, tcp, udp, cross, misplaced)

	// The Gateway: accepted with a listener it cannot serve, programmed at its address.
	eventually(t, "the Gateway programmed", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
			return err
		}
		acc := meta.FindStatusCondition(gw.Status.Conditions, "Accepted")
		if acc == nil || acc.Status != metav1.ConditionTrue || acc.Reason != string(gatewayv1.GatewayReasonListenersNotValid) || acc.ObservedGeneration != gw.Generation {
			return fmt.Errorf("Accepted %+v", acc)
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") || len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != addr {
			return fmt.Errorf("status %+v", gw.Status)
		}
		for name, attached := range map[string]int32{"tcp": 1, "udp": 1, "cross": 1} {
			l := listenerStatus(gw, name)
			if l == nil || l.AttachedRoutes != attached || !meta.IsStatusConditionTrue(l.Conditions, "Accepted") || !meta.IsStatusConditionTrue(l.Conditions, "Programmed") {
				return fmt.Errorf("listener %s: %+v", name, l)
			}
		}
		web := listenerStatus(gw, "web")
		if c := meta.FindStatusCondition(web.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(gatewayv1.ListenerReasonUnsupportedProtocol) {
			return fmt.Errorf("the HTTP listener: %+v", web)
		}
		return nil
	})
	parentCondition(t, tcp, "gw", "Accepted", metav1.ConditionTrue, "Accepted")
	parentCondition(t, tcp, "gw", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	parentCondition(t, udp, "gw", "Accepted", metav1.ConditionTrue, "Accepted")
	parentCondition(t, misplaced, "gw", "Accepted", metav1.ConditionFalse, string(gatewayv1.RouteReasonNotAllowedByListeners))
	// Another namespace's Service without a ReferenceGrant: refused, and not a member.
	parentCondition(t, cross, "gw", "ResolvedRefs", metav1.ConditionFalse, string(gatewayv1.RouteReasonRefNotPermitted))

	// What it made: one load balancer at the Gateway's address, a listener and pool per
	// TCP or UDP listener, the routes' endpoints as members.
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: gateway.LoadBalancerName("gw")}}
	expect(t, lb, statusOf{prov: lbv1.ProvisioningActive}, "", "")
	if !metav1.IsControlledBy(lb, gw) || lb.Spec.VIP == nil || lb.Spec.VIP.Address != addr {
		t.Fatalf("load balancer %+v owned by %+v", lb.Spec, lb.OwnerReferences)
	}
	var ls lbv1.ListenerList
	if err := k8s.List(ctx, &ls, client.InNamespace(ns)); err != nil || len(ls.Items) != 3 {
		t.Fatalf("%d listeners (%v), want 3: the HTTP one is not made", len(ls.Items), err)
	}
	members := func(pool string) []string {
		p := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pool}}
		get(t, p)
		var out []string
		for _, m := range p.Spec.Members {
			out = append(out, fmt.Sprintf("%s:%d", m.Address, m.ProtocolPort))
		}
		return out
	}
	if got := members("gw-gw-tcp"); len(got) != 1 || got[0] != "198.51.100.21:3000" {
		t.Fatalf("tcp pool members %v", got)
	}
	if got := members("gw-gw-udp"); len(got) != 1 || got[0] != "198.51.100.22:53" {
		t.Fatalf("udp pool members %v", got)
	}
	if got := members("gw-gw-cross"); len(got) != 0 {
		t.Fatalf("a Service of another namespace without a grant became a member: %v", got)
	}

	// The grant: accepted, and a member.
	create(t, &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "from-" + ns}, Spec: gatewayv1.ReferenceGrantSpec{
		From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "TCPRoute", Namespace: gatewayv1.Namespace(ns)}},
		To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}})
	parentCondition(t, cross, "gw", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	eventually(t, "the granted Service's endpoint a member", func() error {
		if got := members("gw-gw-cross"); len(got) != 1 || got[0] != "198.51.100.23:3000" {
			return fmt.Errorf("members %v", got)
		}
		return nil
	})

	// A listener removed: its objects go, its route is no longer accepted there.
	update(t, gw, func() { gw.Spec.Listeners = gw.Spec.Listeners[:3] })
	update(t, gw, func() { gw.Spec.Listeners = gw.Spec.Listeners[:2] })
	parentCondition(t, cross, "gw", "Accepted", metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent))
	eventually(t, "the cross listener's objects deleted", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gw-gw-cross"}, &lbv1.Pool{}); err == nil {
			return fmt.Errorf("pool gw-gw-cross still there")
		}
		return nil
	})

	// The class's controller changed to another implementation's: l4lb lets go of everything.
	other2 := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "other-" + ns}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}}
	create(t, other2)
	update(t, gw, func() { gw.Spec.GatewayClassName = gatewayv1.ObjectName(other2.Name) })
	eventually(t, "released", func() error {
		var lbs lbv1.LoadBalancerList
		if err := k8s.List(ctx, &lbs, client.InNamespace(ns)); err != nil || len(lbs.Items) > 0 {
			return fmt.Errorf("%d load balancers left (%v)", len(lbs.Items), err)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(tcp), tcp); err != nil {
			return err
		}
		if len(tcp.Status.Parents) > 0 {
			return fmt.Errorf("the route still shows l4lb's status: %+v", tcp.Status.Parents)
		}
		return nil
	})
}
