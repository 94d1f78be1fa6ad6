package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/services"
)

// Services of type LoadBalancer, served through the objects they own. The API server here has
// no kube-controller-manager: the test writes the EndpointSlices that the EndpointSlice
// controller would. Their addresses are never reached (an EndpointSlice may not name loopback,
// where this test's back-ends would be): test/e2e carries traffic to pods through Services on
// a real cluster, with the real EndpointSlice controller and garbage collector.

func service(ns, name, addr string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Annotations: map[string]string{services.AnnotationAddresses: addr}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(services.Class), Ports: ports}}
}

// endpoint is one back-end of a Service's port (pod-N at 198.51.100.N), as an EndpointSlice
// of its own.
func endpoint(ns, svc string, n int, portName string, proto corev1.Protocol, port int32, ready, serving, terminating bool) *discoveryv1.EndpointSlice {
	pod := fmt.Sprintf("pod-%d", n)
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + pod + "-" + strings.ToLower(string(proto)),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "test"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("198.51.100.%d", n)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
}

func serviceEvent(t *testing.T, ns, name, reason string) error {
	var evs eventsv1.EventList
	if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs.Items {
		if e.Regarding.Kind == "Service" && e.Regarding.Name == name {
			if e.Reason == reason {
				return nil
			}
			got = append(got, e.Reason+": "+e.Note)
		}
	}
	return fmt.Errorf("no %s event on Service %s; events: %q", reason, name, got)
}

func TestServiceIsServedByTheObjectsItOwns(t *testing.T) {
	ctx := context.Background()
	ns, addr := setup(t)
	svc := service(ns, "web", addr,
		corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt(8080)},
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 80, TargetPort: intstr.FromInt(53)})
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	// l4lb reaches the endpoints themselves: it needs no node ports.
	svc.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
	svc.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"}
	svc.Annotations[services.AnnotationTimeoutClientData] = "50000"
	svc.Annotations[services.AnnotationHealthMonitor] = "true"
	create(t, svc,
		endpoint(ns, "web", 1, "http", corev1.ProtocolTCP, 8080, true, true, false),
		endpoint(ns, "web", 2, "http", corev1.ProtocolTCP, 8080, true, true, false),
		endpoint(ns, "web", 4, "dns", corev1.ProtocolUDP, 53, true, true, false),
		// Neither ready nor serving: not a member.
		endpoint(ns, "web", 3, "http", corev1.ProtocolTCP, 8080, false, false, false))

	// The Service's status carries the VIP, with both ports.
	eventually(t, "the Service's ingress", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		in := svc.Status.LoadBalancer.Ingress
		if len(in) != 1 || in[0].IP != addr || ptr.Deref(in[0].IPMode, "") != corev1.LoadBalancerIPModeProxy || len(in[0].Ports) != 2 {
			return fmt.Errorf("ingress %+v", in)
		}
		return nil
	})
	// Events are written in the background: eventually.
	eventually(t, "an EnsuredLoadBalancer event", func() error { return serviceEvent(t, ns, "web", "EnsuredLoadBalancer") })
	if svc.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("a node port was allocated: %d", svc.Spec.Ports[0].NodePort)
	}
	// The objects it owns, as kubectl get l4lb shows them, Ready.
	lbName := services.LoadBalancerName("web")
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: lbName}}
	expect(t, lb, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	if !metav1.IsControlledBy(lb, svc) || lb.Spec.VIP == nil || lb.Spec.VIP.Address != addr || lb.Labels[services.ServiceLabel] != "web" {
		t.Fatalf("load balancer %+v, owners %+v", lb.Spec, lb.OwnerReferences)
	}
	tcp := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-web-tcp-80"}}
	expect(t, tcp, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	if tcp.Spec.TimeoutClientData == nil || tcp.Spec.TimeoutClientData.Duration != 50*time.Second || !slices.Equal(tcp.Spec.AllowedCIDRs, []string{"198.51.100.0/24"}) {
		t.Fatalf("listener %+v", tcp.Spec)
	}
	udp := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-web-udp-80"}}
	expect(t, udp, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	pool := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-web-tcp-80"}}
	expect(t, pool, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	if names := memberNames(pool); !slices.Equal(names, []string{"pod-1", "pod-2"}) {
		t.Fatalf("members %v, want the ready endpoints pod-1 and pod-2", names)
	}
	if sp := pool.Spec.SessionPersistence; sp == nil || sp.Type != lbv1.PersistenceSourceIP || sp.PersistenceTimeout.Duration != 3*time.Hour {
		t.Fatalf("sessionAffinity ClientIP gave persistence %+v", sp)
	}
	var hm lbv1.HealthMonitor
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "svc-web-udp-80"}, &hm); err != nil || hm.Spec.Type != lbv1.MonitorUDPConnect || hm.Spec.Delay.Duration != 5*time.Second {
		t.Fatalf("the UDP pool's monitor: %+v (%v)", hm.Spec, err)
	}

	// Scaled up: pod-3 becomes ready. pod-2 terminating but still serving drains (weight 0: no
	// new connections, open ones finish).
	for _, e := range []*discoveryv1.EndpointSlice{
		endpoint(ns, "web", 3, "http", corev1.ProtocolTCP, 8080, true, true, false),
		endpoint(ns, "web", 2, "http", corev1.ProtocolTCP, 8080, false, true, true),
	} {
		cur := &discoveryv1.EndpointSlice{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(e), cur); err != nil {
			t.Fatal(err)
		}
		e.ResourceVersion = cur.ResourceVersion
		if err := k8s.Update(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "pod-3 serves and pod-2 drains", func() error {
		get(t, pool)
		if names := memberNames(pool); !slices.Equal(names, []string{"pod-1", "pod-2", "pod-3"}) {
			return fmt.Errorf("members %v", names)
		}
		if w1, w2, w3 := weightOf(pool, "pod-1"), weightOf(pool, "pod-2"), weightOf(pool, "pod-3"); w1 != 1 || w2 != 0 || w3 != 1 {
			return fmt.Errorf("weights %d %d %d, want 1 0 1", w1, w2, w3)
		}
		return nil
	})

	// A bad annotation value is an event naming it; nothing changes.
	update(t, svc, func() { svc.Annotations[services.AnnotationLBMethod] = "FASTEST" })
	eventually(t, "an InvalidService event", func() error { return serviceEvent(t, ns, "web", "InvalidService") })
	get(t, pool)
	if pool.Spec.LBAlgorithm != lbv1.RoundRobin || len(pool.Spec.Members) != 3 {
		t.Fatalf("the bad annotation changed the pool: %s, %d members", pool.Spec.LBAlgorithm, len(pool.Spec.Members))
	}
	// Fixed: applied.
	update(t, svc, func() { svc.Annotations[services.AnnotationLBMethod] = "LEAST_CONNECTIONS" })
	eventually(t, "the method applied", func() error {
		get(t, pool)
		if pool.Spec.LBAlgorithm != lbv1.LeastConnections {
			return fmt.Errorf("algorithm %s", pool.Spec.LBAlgorithm)
		}
		return nil
	})

	// A port removed, the monitor turned off: their objects go; the rest stays.
	update(t, svc, func() {
		svc.Spec.Ports = svc.Spec.Ports[:1]
		delete(svc.Annotations, services.AnnotationHealthMonitor)
	})
	eventually(t, "the UDP port's objects and the monitors deleted", func() error {
		var ls lbv1.ListenerList
		var hms lbv1.HealthMonitorList
		if err := k8s.List(ctx, &ls, client.InNamespace(ns)); err != nil {
			return err
		}
		if err := k8s.List(ctx, &hms, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(ls.Items) != 1 || ls.Items[0].Name != "svc-web-tcp-80" || len(hms.Items) != 0 {
			return fmt.Errorf("%d listeners, %d monitors", len(ls.Items), len(hms.Items))
		}
		return nil
	})

	// No longer of type LoadBalancer: everything made for it goes, and so do its addresses.
	update(t, svc, func() {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.LoadBalancerClass = nil
		svc.Spec.LoadBalancerSourceRanges = nil
		svc.Spec.AllocateLoadBalancerNodePorts = nil
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
	})
	eventually(t, "released", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: lbName}, &lbv1.LoadBalancer{}); client.IgnoreNotFound(err) != nil || err == nil {
			return fmt.Errorf("load balancer still there (%v)", err)
		}
		var ls lbv1.ListenerList
		if err := k8s.List(ctx, &ls, client.InNamespace(ns)); err != nil || len(ls.Items) > 0 {
			return fmt.Errorf("listeners left: %d (%v)", len(ls.Items), err)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) > 0 {
			return fmt.Errorf("ingress left: %+v", svc.Status.LoadBalancer.Ingress)
		}
		return nil
	})
}

func TestServicesL4lbDoesNotServe(t *testing.T) {
	ctx := context.Background()
	ns, addr := setup(t)
	port := corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: 80}
	// Another implementation's class, and no class (--service-default-class is off): untouched.
	other := service(ns, "other", addr, port)
	other.Spec.LoadBalancerClass = ptr.To("example.com/other")
	none := service(ns, "none", addr, port)
	none.Spec.LoadBalancerClass = nil
	// A name l4lb would use, taken by a load balancer a user wrote: not taken over.
	taken := service(ns, "taken", addr, port)
	mine := lb(ns, services.LoadBalancerName("taken"), addr)
	// An address outside every pool the namespace may use: the load balancer's reason, on the
	// Service.
	outside := service(ns, "outside", "127.0.31.5", port)
	create(t, mine, other, none, taken, outside)
	eventually(t, "a NameTaken event", func() error { return serviceEvent(t, ns, "taken", "NameTaken") })
	eventually(t, "a NotInPool event", func() error { return serviceEvent(t, ns, "outside", lbv1.ReasonNotInPool) })
	get(t, mine)
	if len(mine.OwnerReferences) > 0 || mine.Spec.Description != "" {
		t.Fatalf("the user's load balancer was changed: %+v", mine.ObjectMeta)
	}
	var lbs lbv1.LoadBalancerList
	if err := k8s.List(ctx, &lbs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(lbs.Items) != 2 {
		t.Fatalf("%d load balancers, want the user's and the one of Service outside", len(lbs.Items))
	}
	for _, s := range []*corev1.Service{other, none, outside} {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil || len(s.Status.LoadBalancer.Ingress) > 0 {
			t.Fatalf("Service %s: ingress %+v (%v)", s.Name, s.Status.LoadBalancer.Ingress, err)
		}
	}
}

// Services that say so share one address; a port both ask for serves the older one, and the
// other Service is told why.
func TestServicesShareAnAddress(t *testing.T) {
	ctx := context.Background()
	ns, addr := setup(t)
	shared := func(name string, port int32) *corev1.Service {
		s := service(ns, name, addr, corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: port})
		s.Annotations[services.AnnotationSharedAddress] = "front"
		return s
	}
	web, admin := shared("web", 80), shared("admin", 81)
	create(t, web, admin)
	for _, s := range []*corev1.Service{web, admin} {
		eventually(t, s.Name+" at the shared address", func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
				return err
			}
			if in := s.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != addr || in[0].Ports[0].Error != nil {
				return fmt.Errorf("ingress %+v", in)
			}
			return nil
		})
	}
	for _, name := range []string{"svc-web-tcp-80", "svc-admin-tcp-81"} {
		expect(t, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	}
	// A third on port 80: the port is web's; the Service says so, in an event and its status.
	clash := shared("clash", 80)
	create(t, clash)
	eventually(t, "the clash reported", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(clash), clash); err != nil {
			return err
		}
		if in := clash.Status.LoadBalancer.Ingress; len(in) != 1 || ptr.Deref(in[0].Ports[0].Error, "") != lbv1.ReasonPortConflict {
			return fmt.Errorf("ingress %+v", in)
		}
		return serviceEvent(t, ns, "clash", lbv1.ReasonPortConflict)
	})
	expect(t, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-web-tcp-80"}}, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	// Without the annotation: refused, as any address already taken.
	loner := service(ns, "loner", addr, corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: 82})
	create(t, loner)
	eventually(t, "an unshared Service refused the address", func() error { return serviceEvent(t, ns, "loner", lbv1.ReasonAddressInUse) })
}

func memberNames(p *lbv1.Pool) []string {
	var out []string
	for _, m := range p.Spec.Members {
		out = append(out, m.Name)
	}
	return out
}

func weightOf(p *lbv1.Pool, name string) int32 {
	for _, m := range p.Spec.Members {
		if m.Name == name {
			return ptr.Deref(m.Weight, 1)
		}
	}
	return -1
}
