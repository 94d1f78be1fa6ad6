package services

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

func svc(annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "web", Protocol: corev1.ProtocolTCP, Port: 80}}
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web", Annotations: annotations},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(Class), Ports: ports}}
}

func TestServesItsClassAndTheDefaultWhenAsked(t *testing.T) {
	s := svc(nil)
	if !Serves(s, false) {
		t.Fatal("l4lb's class not served")
	}
	s.Spec.LoadBalancerClass = nil
	if Serves(s, false) || !Serves(s, true) {
		t.Fatal("no class: served only with the default class on")
	}
	s.Spec.LoadBalancerClass = ptr.To("example.com/other")
	if Serves(s, true) {
		t.Fatal("another implementation's class served")
	}
	s.Spec.LoadBalancerClass, s.Spec.Type = nil, corev1.ServiceTypeClusterIP
	if Serves(s, true) {
		t.Fatal("a ClusterIP Service served")
	}
}

// A Service written for cloud-provider-openstack gets what Octavia would give it.
func TestCloudProviderOpenStackAnnotations(t *testing.T) {
	s := svc(map[string]string{
		AnnotationLBMethod:          "SOURCE_IP",
		AnnotationConnectionLimit:   "1000",
		AnnotationProxyProtocol:     "true",
		AnnotationTimeoutClientData: "60000",
		AnnotationTimeoutMemberConn: "3000",
		AnnotationTimeoutMemberData: "70000",
		AnnotationTimeoutTCPInspect: "0",
		AnnotationHealthMonitor:     "true",
		AnnotationMonitorDelay:      "10",
		AnnotationMonitorRetries:    "2",
		AnnotationFloatingNetworkID: "public-net",
		AnnotationKeepFloatingIP:    "true",
		AnnotationSubnetID:          "subnet-1",
	}, corev1.ServicePort{Name: "web", Protocol: corev1.ProtocolTCP, Port: 80}, corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53})
	s.Spec.LoadBalancerIP = "203.0.113.7"
	got, err := Translate(Input{Service: s, OpenStack: true})
	if err != nil {
		t.Fatal(err)
	}
	lb := got.LoadBalancer.Spec
	if lb.VIP == nil || lb.VIP.Subnet != "subnet-1" || lb.VIP.Address != "" {
		t.Fatalf("vip %+v", lb.VIP)
	}
	if f := lb.FloatingIP; f == nil || f.Network != "public-net" || f.Address != "203.0.113.7" || f.ReclaimPolicy != lbv1.ReclaimRetain {
		t.Fatalf("floating IP %+v: loadBalancerIP names the floating IP on OpenStack, kept", f)
	}
	if len(got.Listeners) != 2 || len(got.Pools) != 2 || len(got.Monitors) != 2 {
		t.Fatalf("%d listeners, %d pools, %d monitors", len(got.Listeners), len(got.Pools), len(got.Monitors))
	}
	l := got.Listeners[0].Spec
	if *l.ConnectionLimit != 1000 || l.TimeoutClientData.Duration != time.Minute || l.TimeoutMemberConnect.Duration != 3*time.Second ||
		l.TimeoutMemberData.Duration != 70*time.Second || l.TimeoutTCPInspect.Duration != 0 {
		t.Fatalf("TCP listener %+v", l)
	}
	if u := got.Listeners[1].Spec; u.TimeoutClientData != nil || u.Protocol != lbv1.ListenerUDP || u.ProtocolPort != 53 {
		t.Fatalf("UDP listener %+v: Octavia's timeouts are TCP's", u)
	}
	if p := got.Pools[0].Spec; p.Protocol != lbv1.PoolPROXY || p.LBAlgorithm != lbv1.SourceIP {
		t.Fatalf("TCP pool %+v", p)
	}
	if p := got.Pools[1].Spec; p.Protocol != lbv1.PoolUDP {
		t.Fatalf("UDP pool %s: PROXY protocol is TCP's", p.Protocol)
	}
	m := got.Monitors[0].Spec
	if m.Type != lbv1.MonitorTCP || m.Delay.Duration != 10*time.Second || m.Timeout.Duration != 3*time.Second || m.MaxRetries != 2 || m.MaxRetriesDown != 3 {
		t.Fatalf("monitor %+v: delay and retries from the annotations, the rest cloud-provider-openstack's defaults", m)
	}
	if got.Monitors[1].Spec.Type != lbv1.MonitorUDPConnect || got.Monitors[1].Spec.PoolRef.Name != got.Pools[1].Name {
		t.Fatalf("UDP monitor %+v", got.Monitors[1].Spec)
	}

	// Internal: no floating IP; loadBalancerIP is then the VIP.
	s.Annotations[AnnotationInternal] = "true"
	got, err = Translate(Input{Service: s, OpenStack: true})
	if err != nil || got.LoadBalancer.Spec.FloatingIP != nil || got.LoadBalancer.Spec.VIP.Address != "203.0.113.7" {
		t.Fatalf("internal: %+v, %v", got.LoadBalancer.Spec, err)
	}
	// Not on OpenStack: no floating IP; the namespace's floating network unused.
	got, _ = Translate(Input{Service: svc(nil), FloatingNetwork: "public-net"})
	if got.LoadBalancer.Spec.FloatingIP != nil || got.LoadBalancer.Spec.VIP != nil {
		t.Fatalf("static: %+v", got.LoadBalancer.Spec)
	}
	// On OpenStack with the namespace's floating network.
	got, _ = Translate(Input{Service: svc(nil), OpenStack: true, FloatingNetwork: "public-net"})
	if f := got.LoadBalancer.Spec.FloatingIP; f == nil || f.Network != "public-net" || f.ReclaimPolicy != lbv1.ReclaimDelete {
		t.Fatalf("the pool's floating network: %+v", f)
	}
}

func TestWhatCannotBeServedIsNamed(t *testing.T) {
	for _, c := range []struct {
		name  string
		svc   *corev1.Service
		wants string
	}{
		{"method", svc(map[string]string{AnnotationLBMethod: "FASTEST"}), AnnotationLBMethod},
		{"limit", svc(map[string]string{AnnotationConnectionLimit: "many"}), AnnotationConnectionLimit},
		{"proxy", svc(map[string]string{AnnotationProxyProtocol: "v3"}), AnnotationProxyProtocol},
		{"timeout", svc(map[string]string{AnnotationTimeoutMemberData: "-5"}), AnnotationTimeoutMemberData},
		{"monitor", svc(map[string]string{AnnotationHealthMonitor: "yes please"}), AnnotationHealthMonitor},
		{"retries", svc(map[string]string{AnnotationHealthMonitor: "true", AnnotationMonitorRetries: "11"}), AnnotationMonitorRetries},
		{"address", svc(map[string]string{AnnotationAddresses: "198.51.100.300"}), AnnotationAddresses},
		{"two addresses", svc(map[string]string{AnnotationAddresses: "198.51.100.3,198.51.100.4"}), AnnotationAddresses},
		{"sctp", svc(nil, corev1.ServicePort{Name: "s", Protocol: corev1.ProtocolSCTP, Port: 9}), "SCTP"},
		{"sharing without an address", svc(map[string]string{AnnotationSharedAddress: "k"}), AnnotationAddresses},
	} {
		_, err := Translate(Input{Service: c.svc})
		if err == nil || !strings.Contains(err.Error(), c.wants) {
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.wants)
		}
	}
	s := svc(nil)
	s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "everyone"}
	if _, err := Translate(Input{Service: s}); err == nil || !strings.Contains(err.Error(), "loadBalancerSourceRanges") {
		t.Errorf("a bad source range: %v", err)
	}
}

func TestASharedAddressIsMarkedOnTheLoadBalancer(t *testing.T) {
	got, err := Translate(Input{Service: svc(map[string]string{AnnotationSharedAddress: "web", AnnotationAddresses: "198.51.100.5"})})
	if err != nil || got.LoadBalancer.Annotations[lbv1.SharedAddressAnnotation] != "web" || got.LoadBalancer.Spec.VIP.Address != "198.51.100.5" {
		t.Fatalf("%+v, %v", got.LoadBalancer.ObjectMeta, err)
	}
}

func slice(family discoveryv1.AddressType, port int32, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	return discoveryv1.EndpointSlice{AddressType: family, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("web"), Protocol: ptr.To(corev1.ProtocolTCP), Port: &port}}}
}

func ep(pod, addr string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod},
		Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
}

func TestMembersAreTheReadyEndpointsAndTheTerminatingDrain(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	s := svc(map[string]string{corev1.AnnotationLoadBalancerSourceRangesKey: "10.0.0.0/8, 192.168.0.0/16"})
	in := Input{Service: s, Slices: []discoveryv1.EndpointSlice{
		slice(discoveryv1.AddressTypeIPv4, 8080,
			ep("b", "10.0.0.2", nil, nil, nil), // conditions unset: ready
			ep("a", "10.0.0.1", yes, yes, no),
			ep("draining", "10.0.0.3", no, yes, yes),
			ep("starting", "10.0.0.4", no, no, no),
			ep("gone", "10.0.0.5", no, no, yes)),
		// The other family of a dual-stack Service, and an FQDN slice: not members.
		slice(discoveryv1.AddressTypeIPv6, 8080, ep("a", "fd00::1", yes, yes, no)),
		slice(discoveryv1.AddressTypeFQDN, 8080, ep("x", "example.com", yes, yes, no)),
	}}
	got, err := Translate(in)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got.Pools[0].Spec.Members {
		names = append(names, m.Name+"="+m.Address+":"+string(rune('0'+*m.Weight)))
		if m.ProtocolPort != 8080 {
			t.Fatalf("member %s on port %d, want the endpoint's 8080", m.Name, m.ProtocolPort)
		}
	}
	if strings.Join(names, " ") != "a=10.0.0.1:1 b=10.0.0.2:1 draining=10.0.0.3:0" {
		t.Fatalf("members %v", names)
	}
	if cidrs := got.Listeners[0].Spec.AllowedCIDRs; len(cidrs) != 2 || cidrs[1] != "192.168.0.0/16" {
		t.Fatalf("source ranges from the annotation: %v", cidrs)
	}
	// externalTrafficPolicy Local: the load balancer's, with each member's node.
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	in.Slices[0].Endpoints[0].NodeName = ptr.To("node-b")
	got, _ = Translate(in)
	if got.LoadBalancer.Spec.TrafficPolicy != lbv1.TrafficLocal || got.Pools[0].Spec.Members[1].NodeName != "node-b" {
		t.Fatalf("Local: %s, members %+v", got.LoadBalancer.Spec.TrafficPolicy, got.Pools[0].Spec.Members)
	}
	// An IPv6 Service takes the IPv6 slice.
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	got, _ = Translate(in)
	if ms := got.Pools[0].Spec.Members; len(ms) != 1 || ms[0].Address != "fd00::1" {
		t.Fatalf("IPv6 members %+v", ms)
	}
}
