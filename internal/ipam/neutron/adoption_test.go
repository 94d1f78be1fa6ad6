package neutron

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
)

func userPort(t *testing.T, name string, opts ports.CreateOpts) *ports.Port {
	t.Helper()
	netID, err := findNetwork(context.Background(), neutron, "private-net")
	if err != nil {
		t.Fatal(err)
	}
	opts.NetworkID, opts.Name = netID, name
	port, err := ports.Create(context.Background(), neutron, opts).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ports.Delete(context.Background(), neutron, port.ID) })
	return port
}

func refusedAdoption(t *testing.T, err error, why string) {
	t.Helper()
	if ipam.Reason(err, "") != lbv1.ReasonAdoptionRefused || !strings.Contains(err.Error(), why) {
		t.Fatalf("want AdoptionRefused (%s), got %v (reason %q)", why, err, ipam.Reason(err, ""))
	}
}

// TestAdoptionIsScoped: a load balancer adopts only a port or floating IP that is free: not
// attached to something else, not another load balancer's. Releasing gives it back, unmarked.
func TestAdoptionIsScoped(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	p := testProvider(nil)
	free := userPort(t, "user-vip-free", ports.CreateOpts{})
	first, second := seedLB(t), seedLB(t)
	for _, lb := range []*lbv1.LoadBalancer{first, second} {
		lb.Spec.VIP, lb.Spec.FloatingIP = &lbv1.VIP{Port: free.ID}, nil
	}
	alloc, err := p.Allocate(ctx, first)
	if err != nil || alloc.PortID != free.ID {
		t.Fatalf("adopting a free port: %+v, %v", alloc, err)
	}
	// Octavia's vip_network_id and vip_subnet_id are the port's, whatever spec.vip named.
	if alloc.NetworkID != free.NetworkID || len(free.FixedIPs) == 0 || alloc.SubnetID != free.FixedIPs[0].SubnetID {
		t.Fatalf("the VIP's network and subnet: %q %q; the port's: %q %+v", alloc.NetworkID, alloc.SubnetID, free.NetworkID, free.FixedIPs)
	}
	first.Status.VIPPortID = alloc.PortID
	_, err = p.Allocate(ctx, second)
	refusedAdoption(t, err, "belongs to another load balancer")

	vm := userPort(t, "a-vm", ports.CreateOpts{DeviceOwner: "compute:nova", DeviceID: "11111111-2222-3333-4444-555555555555"})
	third := seedLB(t)
	third.Spec.VIP, third.Spec.FloatingIP = &lbv1.VIP{Port: vm.ID}, nil
	_, err = p.Allocate(ctx, third)
	refusedAdoption(t, err, "attached to compute:nova")

	// A floating IP associated with someone's VM is refused, and stays where it was.
	pubID, _ := findNetwork(ctx, neutron, "public-net")
	theirs, err := floatingips.Create(ctx, neutron, floatingips.CreateOpts{FloatingNetworkID: pubID, PortID: vm.ID}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	defer floatingips.Delete(ctx, neutron, theirs.ID)
	fourth := seedLB(t)
	fourth.Spec.FloatingIP = &lbv1.FloatingIP{Address: theirs.FloatingIP}
	_, err = p.Allocate(ctx, fourth)
	refusedAdoption(t, err, "associated with port "+vm.ID)
	if got, _ := floatingips.Get(ctx, neutron, theirs.ID).Extract(); got.PortID != vm.ID {
		t.Fatalf("the refused floating IP moved to %q", got.PortID)
	}
	if err := p.Release(ctx, fourth); err != nil { // its own VIP port goes; their floating IP stays
		t.Fatal(err)
	}
	if got, _ := floatingips.Get(ctx, neutron, theirs.ID).Extract(); got.PortID != vm.ID {
		t.Fatalf("releasing the refused load balancer moved their floating IP to %q", got.PortID)
	}

	// Released, the port is free again, for the other load balancer.
	if err := p.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	if got, _ := ports.Get(ctx, neutron, free.ID).Extract(); got == nil || len(got.Tags) != 0 {
		t.Fatalf("the released port is gone or still marked: %+v", got)
	}
	if _, err := p.Allocate(ctx, second); err != nil {
		t.Fatalf("adopting the released port: %v", err)
	}
	second.Status.VIPPortID = free.ID
	if err := p.Release(ctx, second); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseLeavesOthersPairs: two load balancers on one network share the nodes' ports;
// releasing one removes its VIP from them and leaves the other's, and a pair someone else made
// on another port for the same address stays.
func TestReleaseLeavesOthersPairs(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	server := "33333333-4444-5555-6666-777777777777"
	np := nodePort(t, server)
	p := testProvider([]corev1.Node{node("n1", server)})
	one, two := seedLB(t), seedLB(t)
	a1, err := p.Allocate(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := p.Allocate(ctx, two)
	if err != nil {
		t.Fatal(err)
	}
	pairs := []ports.AddressPair{{IPAddress: a1.Address}}
	keepalived := userPort(t, "someone-elses-vrrp", ports.CreateOpts{AllowedAddressPairs: pairs})
	got, _ := ports.Get(ctx, neutron, np.ID).Extract()
	if !hasPair(*got, a1.Address) || !hasPair(*got, a2.Address) {
		t.Fatalf("the node's port lacks a VIP: %v", got.AllowedAddressPairs)
	}
	one.Status.VIPPortID = a1.PortID
	if err := p.Release(ctx, one); err != nil {
		t.Fatal(err)
	}
	got, _ = ports.Get(ctx, neutron, np.ID).Extract()
	if hasPair(*got, a1.Address) || !hasPair(*got, a2.Address) {
		t.Fatalf("after releasing one: the node's pairs %v, want %s only", got.AllowedAddressPairs, a2.Address)
	}
	if other, _ := ports.Get(ctx, neutron, keepalived.ID).Extract(); !hasPair(*other, a1.Address) {
		t.Fatalf("someone else's pair for %s was removed", a1.Address)
	}
	two.Status.VIPPortID = a2.PortID
	if err := p.Release(ctx, two); err != nil {
		t.Fatal(err)
	}
}

// TestSubnetsAndNetworksFollowThePools: once VIP pools name subnets and floating IP networks,
// a namespace takes VIPs and floating IPs only from its pools' ones, by name or ID, and a
// refusal names the field; nothing is made in the cloud for a refused load balancer.
func TestSubnetsAndNetworksFollowThePools(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	subnet, err := findSubnet(ctx, neutron, "private-subnet")
	if err != nil {
		t.Fatal(err)
	}
	pools := []lbv1.VIPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}, Spec: lbv1.VIPPoolSpec{Namespaces: []string{"team-a"},
			Subnets: []string{subnet.ID}, FloatingIPNetworks: []string{"public-net"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}, Spec: lbv1.VIPPoolSpec{Namespaces: []string{"team-b"},
			Subnets: []string{"private-subnet"}}},
	}
	p := testProvider(nil)
	p.Pools = func(_ context.Context, namespace string) ([]ipam.Pool, []lbv1.VIPPool, error) {
		return ipam.PoolsFor(slices.Clone(pools), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}), pools, nil
	}
	in := func(ns string) *lbv1.LoadBalancer {
		lb := seedLB(t)
		lb.Namespace = ns
		return lb
	}
	a := in("team-a") // subnet by ID, network by name: both granted
	alloc, err := p.Allocate(ctx, a)
	if err != nil || alloc.FloatingIPAddress == "" {
		t.Fatalf("team-a: %+v, %v", alloc, err)
	}
	a.Status.VIPPortID = alloc.PortID
	defer p.Release(ctx, a)

	b := in("team-b") // the subnet by name is granted, no floating IP network is
	_, err = p.Allocate(ctx, b)
	if ipam.Reason(err, "") != lbv1.ReasonNotInPool || !strings.Contains(err.Error(), "spec.floatingIP.network") {
		t.Fatalf("team-b's floating IP: %v", err)
	}
	if len(fipsOf(t, b)) != 0 {
		t.Fatal("a refused floating IP was made")
	}
	if err := p.Release(ctx, b); err != nil {
		t.Fatal(err)
	}
	c := in("team-c") // no pool
	_, err = p.Allocate(ctx, c)
	if ipam.Reason(err, "") != lbv1.ReasonNotInPool || !strings.Contains(err.Error(), "spec.vip.subnet") {
		t.Fatalf("team-c's VIP: %v", err)
	}
	if len(portsTagged(t, p, c)) != 0 {
		t.Fatal("a refused VIP port was made")
	}
}
