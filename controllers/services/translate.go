// Package services serves Kubernetes Services of type LoadBalancer with l4lb: each Service of
// l4lb's class owns one LoadBalancer with a Listener and a Pool per port and protocol, whose
// members are the Service's ready endpoints. The four kinds stay the model: what a Service asks
// for ends in the same objects a user could write, and everything the dataplane does applies.
package services

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/owned"
)

const (
	// Class is the spec.loadBalancerClass l4lb serves.
	Class = "lb.l4lb.io/l4lb"
	// ServiceLabel names, on every object made for a Service, that Service.
	ServiceLabel = "lb.l4lb.io/service"
	// namePrefix starts the names of the objects made for a Service, so they do not take the
	// name of a load balancer a user wrote by hand.
	namePrefix = "svc-"
)

// Serves reports whether l4lb answers svc: a LoadBalancer Service of l4lb's class, or of no
// class when defaultClass is set (as the cluster's only load-balancer implementation).
func Serves(svc *corev1.Service, defaultClass bool) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return defaultClass
	}
	return *svc.Spec.LoadBalancerClass == Class
}

// Input is what a Service's objects are made from.
type Input struct {
	Service *corev1.Service
	// Slices are the Service's EndpointSlices (label kubernetes.io/service-name).
	Slices []discoveryv1.EndpointSlice
	// OpenStack says the load balancer gets the openstack provider (the controller's default
	// for load balancers that name none), so loadBalancerIP names a floating IP, as it does for
	// cloud-provider-openstack.
	OpenStack bool
	// FloatingNetwork is the floating-IP network of the namespace's VIP pool, used when the
	// Service names none.
	FloatingNetwork string
}

// LoadBalancerName is the name of the load balancer made for the Service named svc.
func LoadBalancerName(svc string) string { return namePrefix + svc }

// portName names the listener, pool and monitor of one port of a Service.
func portName(svc string, p corev1.ServicePort) string {
	return fmt.Sprintf("%s%s-%s-%d", namePrefix, svc, strings.ToLower(string(p.Protocol)), p.Port)
}

// Translate makes the objects that serve in.Service. An error names what the Service asks
// that l4lb cannot serve (an annotation's value, a protocol); nothing is made then.
func Translate(in Input) (owned.Objects, error) {
	svc := in.Service
	a, err := parseAnnotations(svc.Annotations)
	if err != nil {
		return owned.Objects{}, err
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP && p.Protocol != corev1.ProtocolUDP {
			return owned.Objects{}, fmt.Errorf("spec.ports[%s]: protocol %s: l4lb serves TCP and UDP", cmp.Or(p.Name, fmt.Sprint(p.Port)), p.Protocol)
		}
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: svc.Namespace, Name: name}
	}
	lbName := LoadBalancerName(svc.Name)
	var out owned.Objects
	out.LoadBalancer = lbv1.LoadBalancer{ObjectMeta: meta(lbName),
		Spec: lbv1.LoadBalancerSpec{Description: "Service " + svc.Namespace + "/" + svc.Name}}
	if a.share != "" {
		out.LoadBalancer.Annotations = map[string]string{lbv1.SharedAddressAnnotation: a.share}
	}
	lb := &out.LoadBalancer.Spec
	vip := lbv1.VIP{Subnet: a.subnet, Network: a.network, Port: a.port}
	if len(a.addresses) > 0 {
		vip.Address = a.addresses[0]
	}
	fip := lbv1.FloatingIP{Network: cmp.Or(a.floatingNetwork, in.FloatingNetwork), ReclaimPolicy: lbv1.ReclaimDelete}
	if a.keepFloatingIP {
		fip.ReclaimPolicy = lbv1.ReclaimRetain
	}
	if ip := svc.Spec.LoadBalancerIP; ip != "" {
		// cloud-provider-openstack's meaning on OpenStack (the floating IP), the VIP elsewhere.
		if in.OpenStack && !a.internal {
			fip.Address = ip
		} else if vip.Address == "" {
			vip.Address = ip
		}
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		// No second hop: only nodes running endpoints hold the VIP, each sending to its own.
		lb.TrafficPolicy = lbv1.TrafficLocal
	}
	if vip != (lbv1.VIP{}) {
		lb.VIP = &vip
	}
	if in.OpenStack && !a.internal && (fip.Network != "" || fip.Address != "") {
		lb.FloatingIP = &fip
	}

	family := discoveryv1.AddressTypeIPv4
	if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
		family = discoveryv1.AddressTypeIPv6
	}
	if vip.Address != "" {
		if addr, err := netip.ParseAddr(vip.Address); err == nil && addr.Unmap().Is6() {
			family = discoveryv1.AddressTypeIPv6
		}
	}
	sources := svc.Spec.LoadBalancerSourceRanges
	if len(sources) == 0 && svc.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey] != "" {
		for _, s := range strings.Split(svc.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey], ",") {
			sources = append(sources, strings.TrimSpace(s))
		}
	}
	for _, s := range sources {
		if _, err := netip.ParsePrefix(s); err != nil {
			return owned.Objects{}, fmt.Errorf("spec.loadBalancerSourceRanges: %q is not a CIDR", s)
		}
	}
	for _, p := range svc.Spec.Ports {
		name := portName(svc.Name, p)
		l := lbv1.Listener{ObjectMeta: meta(name), Spec: lbv1.ListenerSpec{
			LoadBalancerRef: lbv1.ObjectReference{Name: lbName},
			Protocol:        lbv1.ListenerProtocol(p.Protocol),
			ProtocolPort:    p.Port,
			ConnectionLimit: a.connectionLimit,
			AllowedCIDRs:    sources,
		}}
		pool := lbv1.Pool{ObjectMeta: meta(name), Spec: lbv1.PoolSpec{
			LoadBalancerRef: &lbv1.ObjectReference{Name: lbName},
			ListenerRef:     &lbv1.ObjectReference{Name: name},
			Protocol:        lbv1.PoolProtocol(p.Protocol),
			LBAlgorithm:     a.method,
			Members:         Members(in.Slices, p, family),
		}}
		if p.Protocol == corev1.ProtocolTCP {
			l.Spec.TimeoutClientData, l.Spec.TimeoutMemberConnect = a.timeoutClientData, a.timeoutMemberConnect
			l.Spec.TimeoutMemberData, l.Spec.TimeoutTCPInspect = a.timeoutMemberData, a.timeoutTCPInspect
			if a.proxyProtocol != "" {
				pool.Spec.Protocol = a.proxyProtocol
			}
		}
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			timeout := int32(corev1.DefaultClientIPServiceAffinitySeconds)
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				timeout = *c.ClientIP.TimeoutSeconds
			}
			pool.Spec.SessionPersistence = &lbv1.SessionPersistence{Type: lbv1.PersistenceSourceIP,
				PersistenceTimeout: &metav1.Duration{Duration: time.Duration(timeout) * time.Second}}
		}
		out.Listeners = append(out.Listeners, l)
		out.Pools = append(out.Pools, pool)
		if a.monitor != nil {
			m := lbv1.HealthMonitor{ObjectMeta: meta(name), Spec: *a.monitor}
			m.Spec.PoolRef = lbv1.ObjectReference{Name: name}
			m.Spec.Type = lbv1.MonitorTCP
			if p.Protocol == corev1.ProtocolUDP {
				m.Spec.Type = lbv1.MonitorUDPConnect
			}
			out.Monitors = append(out.Monitors, m)
		}
	}
	return out, nil
}

// Members are the endpoints of a Service's port p in its slices of family: ready ones serve;
// serving ones that are terminating drain (weight 0: no new connections, open ones finish), as
// Kubernetes defines a terminating endpoint. Gateway routes' backends are served the same way.
func Members(from []discoveryv1.EndpointSlice, p corev1.ServicePort, family discoveryv1.AddressType) []lbv1.Member {
	var out []lbv1.Member
	seen := map[string]bool{}
	for _, s := range from {
		if s.AddressType != family {
			continue
		}
		var port int32
		for _, sp := range s.Ports {
			if ptr.Deref(sp.Name, "") == p.Name && ptr.Deref(sp.Protocol, corev1.ProtocolTCP) == p.Protocol && sp.Port != nil {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			weight := int32(1)
			switch {
			case ptr.Deref(e.Conditions.Ready, true):
			case ptr.Deref(e.Conditions.Serving, false) && ptr.Deref(e.Conditions.Terminating, false):
				weight = 0
			default:
				continue
			}
			addr := e.Addresses[0]
			name := addr
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" && len(e.TargetRef.Name) <= 63 {
				name = e.TargetRef.Name
			}
			if seen[name] {
				name = addr
			}
			if seen[name] {
				continue
			}
			seen[name] = true
			out = append(out, lbv1.Member{Name: name, Address: addr, ProtocolPort: port, Weight: ptr.To(weight), NodeName: ptr.Deref(e.NodeName, "")})
		}
	}
	// Stable order: a reordered slice is not a change.
	slices.SortFunc(out, func(a, b lbv1.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
