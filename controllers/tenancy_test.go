package controllers_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/test/tcptest"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ssa"
)

// namespace makes a namespace with labels, removed with the test.
func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := fmt.Sprintf("t%d", seq.Add(1))
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
	return ns
}

// clusterObject creates a cluster-scoped object, deleted with the test.
func clusterObject(t *testing.T, o client.Object) {
	t.Helper()
	create(t, o)
	t.Cleanup(func() { k8s.Delete(context.Background(), o) })
}

func condOf(t *testing.T, obj client.Object, typ string) *metav1.Condition {
	t.Helper()
	return meta.FindStatusCondition(get(t, obj).Conditions, typ)
}

// TestVIPPoolsDecideWhoGetsWhichAddress: a pool for one namespace by name and one for a label;
// a namespace outside both gets nothing, with the field named; an overlapping pool is not
// used and says so.
func TestVIPPoolsDecideWhoGetsWhichAddress(t *testing.T) {
	a := namespace(t, nil)
	team := namespace(t, map[string]string{"team": "blue"})
	other := namespace(t, nil)
	clusterObject(t, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-" + a},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"127.0.31.0/30"}, Namespaces: []string{a}}})
	clusterObject(t, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-blue"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"127.0.32.0/30"}, NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}}})

	auto := func(ns, name string) *lbv1.LoadBalancer {
		return &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic}}
	}
	inA, inTeam := auto(a, "lb"), auto(team, "lb")
	create(t, inA, inTeam)
	expect(t, inA, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionVIPAllocated, lbv1.ReasonAllocated)
	expect(t, inTeam, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionVIPAllocated, lbv1.ReasonAllocated)
	if inA.Status.VIPAddress != "127.0.31.1" || inTeam.Status.VIPAddress != "127.0.32.1" {
		t.Fatalf("VIPs %s and %s, want the first of each pool", inA.Status.VIPAddress, inTeam.Status.VIPAddress)
	}

	// Another namespace asking for an address of a's pool, or for any address.
	stolen := lb(other, "stolen", "127.0.31.2")
	none := auto(other, "none")
	create(t, stolen, none)
	for _, o := range []*lbv1.LoadBalancer{stolen, none} {
		expect(t, o, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionVIPAllocated, lbv1.ReasonNotInPool)
		if o.Status.VIPAddress != "" {
			t.Fatalf("%s got %s", o.Name, o.Status.VIPAddress)
		}
	}
	if c := condOf(t, stolen, lbv1.ConditionVIPAllocated); !strings.Contains(c.Message, "spec.vip.address") {
		t.Fatalf("the refusal does not name the field: %q", c.Message)
	}

	// A newer pool overlapping a's is not used, and names the older one.
	over := &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-over-" + a},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"127.0.31.0/24"}, Namespaces: []string{other}}}
	clusterObject(t, over)
	eventually(t, "the overlap is reported", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(over), over); err != nil {
			return err
		}
		c := meta.FindStatusCondition(over.Status.Conditions, lbv1.ConditionAccepted)
		if c == nil || c.Reason != lbv1.ReasonOverlap || !strings.Contains(c.Message, "pool-"+a) {
			return fmt.Errorf("Accepted %+v", c)
		}
		return nil
	})
	expect(t, stolen, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionVIPAllocated, lbv1.ReasonNotInPool)
}

// TestReservedAddressesAreRefused: VIPs on the metadata service's address, a node's address or
// the Service range, and members at link-local or IPv6 loopback addresses, are refused with the
// reason; the rest of the pool serves; an administrator's AddressPolicy admits a member.
func TestReservedAddressesAreRefused(t *testing.T) {
	ns := namespace(t, nil)
	clusterObject(t, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-" + ns},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"169.254.0.0/16", "198.51.100.0/24", "10.0.0.0/8"}, Namespaces: []string{ns}, AutoAssign: new(bool)}})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + ns}}
	clusterObject(t, node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.7"}}
	if err := k8s.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	var scs networkingv1.ServiceCIDRList
	if err := k8s.List(context.Background(), &scs); err != nil || len(scs.Items) == 0 {
		t.Fatalf("the API server's ServiceCIDRs: %v, %v", scs.Items, err)
	}
	svc := netip.MustParsePrefix(scs.Items[0].Spec.CIDRs[0]).Addr().Next().Next().String()
	for addr, why := range map[string]string{"169.254.169.254": "link-local", "198.51.100.7": "node-" + ns, svc: "Service CIDR"} {
		l := lb(ns, "vip-"+strings.NewReplacer(".", "-", ":", "-").Replace(addr), addr)
		create(t, l)
		expect(t, l, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionVIPAllocated, lbv1.ReasonAddressRefused)
		if c := condOf(t, l, lbv1.ConditionVIPAllocated); !strings.Contains(c.Message, why) || !strings.Contains(c.Message, "spec.vip.address") {
			t.Fatalf("VIP %s: %q does not say %s", addr, c.Message, why)
		}
		// Gone before the policy below admits 169.254.169.254 (for a member): the VIP would
		// then be allocated and put on this machine's lo, hijacking its metadata service.
		if err := k8s.Delete(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}

	// Members: the good one serves, the reserved ones are named.
	_, addr := setup(t)
	good := tcptest.Named(t, "good")
	l := lb(ns, "lb", addr)
	p := pool(ns, "p", "l", good)
	p.Spec.Members = append(p.Spec.Members,
		lbv1.Member{Name: "metadata", Address: "169.254.169.254", ProtocolPort: 80},
		lbv1.Member{Name: "self", Address: "::1", ProtocolPort: 10250})
	create(t, l, listener(ns, "l", "lb", 91), p)
	expect(t, p, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionMembersAccepted, lbv1.ReasonAddressRefused)
	c := condOf(t, p, lbv1.ConditionMembersAccepted)
	if !strings.Contains(c.Message, "member metadata: 169.254.169.254 is link-local") || !strings.Contains(c.Message, "member self: ::1 is loopback") {
		t.Fatalf("MembersAccepted %q", c.Message)
	}
	for range 3 {
		answers(t, addr+":91", "good")
	}
	clusterObject(t, &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "metadata-" + ns}, Spec: lbv1.AddressPolicySpec{Allow: []string{"169.254.169.254/32", "::1/128"}}})
	expect(t, p, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionMembersAccepted, lbv1.ReasonAccepted)
}

// TestOneVIPPortAcrossNamespaces: two load balancers in two namespaces hold the same VIP (as
// an adopted port would give them); their listeners on the same port: the older serves, the
// newer is refused naming it, and serves once the older goes.
func TestOneVIPPortAcrossNamespaces(t *testing.T) {
	older, newer := namespace(t, nil), namespace(t, nil)
	_, addr := setup(t)
	a, b := tcptest.Named(t, "older"), tcptest.Named(t, "newer")
	first := lb(older, "lb", addr)
	l1 := listener(older, "l", "lb", 92)
	create(t, first, l1, pool(older, "p", "l", a))
	expect(t, l1, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)

	// The second holds the same address through a provider this controller does not run, as
	// another cluster's or a hand-made Neutron port would give it.
	second := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: newer, Name: "lb"},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderOpenStack, VIP: &lbv1.VIP{Port: "adopted"}}}
	create(t, second)
	// Written under a field manager of its own, so the controller's writes (which may come from
	// a cache that has not seen it yet) never remove it.
	if err := ssa.ApplyStatus(context.Background(), k8s, "LoadBalancer", newer, "lb", "another-provider",
		lbv1.LoadBalancerStatus{VIPAddress: addr, VIPPortID: "adopted"}); err != nil {
		t.Fatal(err)
	}
	l2 := listener(newer, "l", "lb", 92)
	create(t, l2, pool(newer, "p", "l", b))
	expect(t, l2, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionAccepted, lbv1.ReasonPortConflict)
	if c := condOf(t, l2, lbv1.ConditionAccepted); !strings.Contains(c.Message, older+"/l") {
		t.Fatalf("the refusal does not name the older listener: %q", c.Message)
	}
	expect(t, l1, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	for range 3 {
		answers(t, addr+":92", "older")
	}
	if err := k8s.Delete(context.Background(), l1); err != nil {
		t.Fatal(err)
	}
	expect(t, l2, statusOf{}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
}
