package model

import (
	"net/netip"
	"strings"
	"testing"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// TestReservedMembersAreLeftOutAndTheRestServes: each class of address a tenant may not send
// traffic to is refused for members and monitor addresses, with its reason; the pool serves
// its other members.
func TestReservedMembersAreLeftOutAndTheRestServes(t *testing.T) {
	cases := []struct {
		name, address, monitorAddress, why string
	}{
		{"loopback (the kubelet's 127.0.0.1:10250)", "127.0.0.1", "", "loopback"},
		{"IPv6 loopback", "::1", "", "loopback"},
		{"link-local (the metadata service)", "169.254.169.254", "", "link-local"},
		{"IPv6 link-local", "fe80::1", "", "link-local"},
		{"multicast", "224.0.0.1", "", "multicast"},
		{"unspecified", "0.0.0.0", "", "unspecified"},
		{"broadcast", "255.255.255.255", "", "broadcast"},
		{"a monitor address probing the metadata service", "203.0.113.50", "169.254.169.254", "monitor address 169.254.169.254 is link-local"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := seed()
			o.Pools[0].Spec.Members = append(o.Pools[0].Spec.Members, lbv1.Member{Name: "bad", Address: tc.address, ProtocolPort: 80, MonitorAddress: tc.monitorAddress})
			res := Build(o)
			refused := res.Refused[Ref{"Pool", "ns", "p80"}]
			if len(refused) != 1 || refused[0].Name != "bad" || !strings.Contains(refused[0].Reason, tc.why) {
				t.Fatalf("refused %+v, want member bad (%s)", refused, tc.why)
			}
			if len(res.Problems) != 0 || len(res.Model.Listeners) != 1 || len(res.Model.Listeners[0].Pool.Members) != 2 {
				t.Fatalf("the rest of the pool does not serve: problems %v, listeners %+v", res.Problems, res.Model.Listeners)
			}
		})
	}
}

func TestAddressPolicyAllowsAndDenies(t *testing.T) {
	policy := PolicyFrom([]lbv1.AddressPolicy{
		{Spec: lbv1.AddressPolicySpec{Allow: []string{"127.0.0.0/8"}}},
		{Spec: lbv1.AddressPolicySpec{Allow: []string{"169.254.0.0/16"}, Deny: []string{"169.254.169.254/32", "203.0.113.12/32"}}},
	})
	for addr, refused := range map[string]bool{
		"127.0.0.1":       false, // allowed by the administrator
		"::1":             true,  // not in any allow
		"169.254.10.1":    false,
		"169.254.169.254": true, // deny wins over allow
		"203.0.113.12":    true, // denied although not reserved
		"203.0.113.11":    false,
	} {
		if got := policy.MemberRefused(netip.MustParseAddr(addr)) != ""; got != refused {
			t.Errorf("%s: refused %v, want %v", addr, got, refused)
		}
	}
	if why := (Policy{Unrestricted: true}).MemberRefused(netip.MustParseAddr("127.0.0.1")); why != "" {
		t.Errorf("unrestricted refused: %s", why)
	}
}

func TestRefusedVIPServesNothing(t *testing.T) {
	for vip, policy := range map[string]Policy{
		"169.254.169.254": {},
		"10.0.0.5":        {VIPReserved: []Reserved{{netip.MustParsePrefix("10.0.0.5/32"), "the address of node n1"}}},
		"10.96.0.10":      {VIPReserved: []Reserved{{netip.MustParsePrefix("10.96.0.0/12"), "in the Service CIDR 10.96.0.0/12"}}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	} {
		o := seed()
		o.LoadBalancers[0].Status.VIPAddress = vip
		o.Policy = policy
		res := Build(o)
		if p := res.Problems[Ref{"Listener", "ns", "l80"}]; p.Reason != lbv1.ReasonAddressRefused || !strings.Contains(p.Message, vip) {
			t.Errorf("VIP %s: problem %+v", vip, p)
		}
		if len(res.Model.Listeners) != 0 {
			t.Errorf("VIP %s is served", vip)
		}
	}
}

// TestOneListenerPerVIPPortInTheCluster: two load balancers in two namespaces with the same
// VIP (an adopted port, say) and a listener on the same protocol and port: the older serves,
// the newer names it; another protocol on the same port is fine.
func TestOneListenerPerVIPPortInTheCluster(t *testing.T) {
	o := seed()
	other := seed()
	for i := range other.LoadBalancers {
		other.LoadBalancers[i].Namespace = "tenant-b"
		other.LoadBalancers[i].CreationTimestamp.Time = other.LoadBalancers[i].CreationTimestamp.Add(60e9)
	}
	for i := range other.Listeners {
		other.Listeners[i].Namespace = "tenant-b"
		other.Listeners[i].CreationTimestamp.Time = other.Listeners[i].CreationTimestamp.Add(60e9)
	}
	o.LoadBalancers = append(o.LoadBalancers, other.LoadBalancers...)
	o.Listeners = append(o.Listeners, other.Listeners...)
	udp := other.Listeners[0]
	udp.Name, udp.Spec.Protocol = "u80", "UDP"
	o.Listeners = append(o.Listeners, udp)
	res := Build(o)
	p := res.Problems[Ref{"Listener", "tenant-b", "l80"}]
	if p.Reason != lbv1.ReasonPortConflict || !strings.Contains(p.Message, "ns/l80") {
		t.Fatalf("the newer listener: %+v; all %v", p, res.Problems)
	}
	if len(res.Problems) != 1 || len(res.Model.Listeners) != 2 || res.Model.Listeners[0].Key != "ns/l80" || res.Model.Listeners[1].Key != "tenant-b/u80" {
		t.Fatalf("problems %v, served %+v", res.Problems, res.Model.Listeners)
	}
}
