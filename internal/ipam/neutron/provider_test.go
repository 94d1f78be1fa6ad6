package neutron

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
)

// These tests run against a real Keystone and Neutron started by hack/openstack.sh on
// loopback. They need root (Debian packages, PostgreSQL); without it they are skipped, saying so.

var (
	cloudsYAML []byte
	neutron    *gophercloud.ServiceClient
	cloudErr   error
)

func TestMain(m *testing.M) {
	var down func()
	cloudsYAML, down, cloudErr = cloudtest.Up()
	if cloudErr == nil {
		p := testProvider(nil)
		neutron, cloudErr = p.client(context.Background())
	}
	code := m.Run()
	down()
	os.Exit(code)
}

func needCloud(t *testing.T) {
	t.Helper()
	if errors.Is(cloudErr, cloudtest.ErrNotRoot) {
		t.Skip(cloudErr)
	}
	if cloudErr != nil {
		t.Fatal(cloudErr)
	}
}

func testProvider(nodes []corev1.Node) *Provider {
	return &Provider{
		ClusterID: "test",
		Credentials: func(context.Context) (openstack.Credentials, error) {
			return openstack.FromSecret(map[string][]byte{"clouds.yaml": cloudsYAML, "cloud": []byte("l4lb-local")}, "")
		},
		Nodes: func(context.Context) ([]corev1.Node, error) { return nodes, nil },
	}
}

var lbCount int

func seedLB(t *testing.T) *lbv1.LoadBalancer {
	lbCount++
	return &lbv1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("lb-test-%d", lbCount),
			UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", lbCount+1000*os.Getpid()%1000000))},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderOpenStack, VIP: &lbv1.VIP{Subnet: "private-subnet"},
			FloatingIP: &lbv1.FloatingIP{Network: "public-net", ReclaimPolicy: lbv1.ReclaimDelete}},
	}
}

func portsTagged(t *testing.T, p *Provider, lb *lbv1.LoadBalancer) []ports.Port {
	t.Helper()
	found, err := listPorts(context.Background(), neutron, ports.ListOpts{Tags: strings.Join(p.tags(lb), ",")})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func fipsOf(t *testing.T, lb *lbv1.LoadBalancer) []floatingips.FloatingIP {
	t.Helper()
	found, err := listFloatingIPs(context.Background(), neutron, floatingips.ListOpts{Description: description(lb)})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// nodePort makes a port standing for a Nova server's interface on private-net.
func nodePort(t *testing.T, server string) *ports.Port {
	t.Helper()
	netID, err := findNetwork(context.Background(), neutron, "private-net")
	if err != nil {
		t.Fatal(err)
	}
	port, err := ports.Create(context.Background(), neutron, ports.CreateOpts{NetworkID: netID, Name: "node-" + server,
		DeviceID: server, DeviceOwner: "compute:nova"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ports.Delete(context.Background(), neutron, port.ID) })
	return port
}

func node(name, server string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: "openstack:///" + server}}
}

func TestSeedLoadBalancerGetsPortFloatingIPAndAddressPairs(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	server := fmt.Sprintf("11111111-2222-3333-4444-%012d", os.Getpid())
	np := nodePort(t, server)
	p := testProvider([]corev1.Node{node("node-1", server)})
	lb := seedLB(t)
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(alloc.Address, "192.0.2.") || alloc.PortID == "" || !strings.HasPrefix(alloc.FloatingIPAddress, "203.0.113.") {
		t.Fatalf("allocation %+v", alloc)
	}
	// What `openstack port show` and `openstack floating ip list` show.
	port, err := ports.Get(ctx, neutron, alloc.PortID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if port.Name != "l4lb-default-"+lb.Name || len(port.Tags) != 2 || port.Tags[0] != "l4lb-cluster:test" && port.Tags[1] != "l4lb-cluster:test" {
		t.Fatalf("port %s tags %v", port.Name, port.Tags)
	}
	fip, err := floatingips.Get(ctx, neutron, alloc.FloatingIPID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if fip.PortID != alloc.PortID || fip.FixedIP != alloc.Address {
		t.Fatalf("floating IP on port %s fixed %s, want %s %s", fip.PortID, fip.FixedIP, alloc.PortID, alloc.Address)
	}
	got, _ := ports.Get(ctx, neutron, np.ID).Extract()
	if !hasPair(*got, alloc.Address) {
		t.Fatalf("node port pairs %v lack the VIP", got.AllowedAddressPairs)
	}
	// Idempotent: a second reconcile finds everything and creates nothing.
	again, err := p.Allocate(ctx, lb)
	if err != nil || again != alloc {
		t.Fatalf("second allocation %+v, %v", again, err)
	}
	if n := len(portsTagged(t, p, lb)); n != 1 {
		t.Fatalf("%d ports", n)
	}
	// A node leaving loses the pair.
	p.Nodes = func(context.Context) ([]corev1.Node, error) { return nil, nil }
	if _, err := p.Allocate(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if got, _ := ports.Get(ctx, neutron, np.ID).Extract(); hasPair(*got, alloc.Address) {
		t.Fatal("the pair stayed on a node that left")
	}
	p.Nodes = func(context.Context) ([]corev1.Node, error) { return []corev1.Node{node("node-1", server)}, nil }
	p.Allocate(ctx, lb)

	if err := p.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if n := len(portsTagged(t, p, lb)); n != 0 {
		t.Fatalf("%d VIP ports left", n)
	}
	if f := fipsOf(t, lb); len(f) != 0 {
		t.Fatalf("floating IPs left: %+v", f)
	}
	if got, _ := ports.Get(ctx, neutron, np.ID).Extract(); hasPair(*got, alloc.Address) {
		t.Fatal("the address pair was left behind")
	}
	if err := p.Release(ctx, lb); err != nil {
		t.Fatalf("releasing twice: %v", err)
	}
}

func TestRetainKeepsTheFloatingIPUnattached(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	p := testProvider(nil)
	lb := seedLB(t)
	lb.Spec.FloatingIP.ReclaimPolicy = lbv1.ReclaimRetain
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	defer floatingips.Delete(ctx, neutron, alloc.FloatingIPID)
	if err := p.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	fip, err := floatingips.Get(ctx, neutron, alloc.FloatingIPID).Extract()
	if err != nil {
		t.Fatalf("retained floating IP gone: %v", err)
	}
	if fip.PortID != "" {
		t.Fatalf("retained floating IP still on port %s", fip.PortID)
	}
}

func TestAdoptedFloatingIPAndPortAreNeverDeleted(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	p := testProvider(nil)
	pubID, _ := findNetwork(ctx, neutron, "public-net")
	fip, err := floatingips.Create(ctx, neutron, floatingips.CreateOpts{FloatingNetworkID: pubID}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	defer floatingips.Delete(ctx, neutron, fip.ID)
	netID, _ := findNetwork(ctx, neutron, "private-net")
	own, err := ports.Create(ctx, neutron, ports.CreateOpts{NetworkID: netID, Name: "user-vip"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	defer ports.Delete(ctx, neutron, own.ID)
	lb := seedLB(t)
	lb.Spec.VIP = &lbv1.VIP{Port: own.ID}
	lb.Spec.FloatingIP = &lbv1.FloatingIP{Address: fip.FloatingIP, ReclaimPolicy: lbv1.ReclaimDelete}
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.PortID != own.ID || alloc.FloatingIPID != fip.ID {
		t.Fatalf("allocation %+v did not adopt", alloc)
	}
	lb.Status.VIPPortID = alloc.PortID
	if err := p.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if _, err := ports.Get(ctx, neutron, own.ID).Extract(); err != nil {
		t.Fatalf("the adopted port was deleted: %v", err)
	}
	got, err := floatingips.Get(ctx, neutron, fip.ID).Extract()
	if err != nil || got.PortID != "" {
		t.Fatalf("the adopted floating IP: %+v, %v (want kept and disassociated)", got, err)
	}
}

func TestCrashBetweenCreateAndTagIsAdopted(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	p := testProvider(nil)
	lb := seedLB(t)
	lb.Spec.FloatingIP = nil
	// What a controller killed right after creating the port leaves: named, untagged.
	netID, _ := findNetwork(ctx, neutron, "private-net")
	orphan, err := ports.Create(ctx, neutron, ports.CreateOpts{NetworkID: netID, Name: portName(lb), Description: description(lb)}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := p.Allocate(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.PortID != orphan.ID {
		t.Fatalf("a second port %s was created instead of adopting %s", alloc.PortID, orphan.ID)
	}
	if err := p.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if _, err := ports.Get(ctx, neutron, orphan.ID).Extract(); !isNotFound(err) {
		t.Fatalf("the adopted orphan was not released: %v", err)
	}
}

func TestWrongCredentialsAndMissingNetworksAreReported(t *testing.T) {
	needCloud(t)
	ctx := context.Background()
	bad := &Provider{ClusterID: "test", Credentials: func(context.Context) (openstack.Credentials, error) {
		return openstack.FromSecret(map[string][]byte{"clouds.yaml": []byte(strings.Replace(string(cloudsYAML), "password: ", "password: wrong-", 1)), "cloud": []byte("l4lb-local")}, "")
	}}
	_, err := bad.Allocate(ctx, seedLB(t))
	if ipam.Reason(err, "") != lbv1.ReasonCredentialsRefused {
		t.Fatalf("wrong password: %v (reason %q)", err, ipam.Reason(err, ""))
	}
	lb := seedLB(t)
	lb.Spec.VIP.Subnet = "no-such-subnet"
	_, err = testProvider(nil).Allocate(ctx, lb)
	if ipam.Reason(err, "") != lbv1.ReasonNotFound || !strings.Contains(err.Error(), "no-such-subnet") {
		t.Fatalf("missing subnet: %v", err)
	}
	lb = seedLB(t)
	lb.Spec.FloatingIP.Network = "no-such-net"
	p := testProvider(nil)
	alloc, err := p.Allocate(ctx, lb)
	if alloc.Address == "" || ipam.Reason(err, "") != lbv1.ReasonNotFound {
		t.Fatalf("missing floating network: %+v, %v", alloc, err)
	}
	if err := p.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	unreachable := &Provider{ClusterID: "test", Credentials: func(context.Context) (openstack.Credentials, error) {
		return openstack.FromSecret(map[string][]byte{"OS_AUTH_URL": []byte("http://127.0.0.1:1/v3"), "OS_USERNAME": []byte("x"), "OS_PASSWORD": []byte("y")}, "")
	}}
	if _, err := unreachable.Allocate(ctx, seedLB(t)); ipam.Reason(err, "") != lbv1.ReasonProviderUnavailable {
		t.Fatalf("unreachable endpoint: %v", err)
	}
}
