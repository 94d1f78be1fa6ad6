package neutron_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/services"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ipam/neutron"
	"github.com/l4lb/l4lb/test/testenv"
)

// TestSeedWalkthroughOnOpenStack applies the seed's walkthrough (config/samples/openstack) to a
// real API server with the controller using the openstack provider against the local Neutron,
// and one agent: lb-test-1 becomes ACTIVE, the openstack CLI shows its floating IP on the VIP
// port, and deleting it leaves nothing in Neutron.
func TestSeedWalkthroughOnOpenStack(t *testing.T) {
	neutron.NeedCloud(t)
	ctrl.SetLogger(logr.Discard())
	env := testenv.ForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := env.Client
	for _, ns := range []string{"l4lb-system", "seed"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "openstack-credentials"},
		Data: map[string][]byte{"clouds.yaml": neutron.CloudsYAML(), "cloud": []byte("l4lb-local")}}
	server := fmt.Sprintf("22222222-3333-4444-5555-%012d", os.Getpid())
	np := neutron.NodePort(t, server)
	n := neutron.Node("node-1", server)
	for _, o := range []client.Object{secret, &n} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	// The agent binds the VIP's listeners without owning the address (IP_FREEBIND): Neutron
	// here moves no packets, and the test changes no interface of the machine.
	engine, err := env.Run(ctx, testenv.ControlPlane{AgentNode: "node-1", DefaultProvider: lbv1.ProviderOpenStack, Providers: func(mgr ctrl.Manager) map[lbv1.Provider]ipam.Provider {
		return map[lbv1.Provider]ipam.Provider{
			lbv1.ProviderStatic:    ipam.NewStatic(nil, mgr.GetClient()),
			lbv1.ProviderOpenStack: neutron.New(mgr, client.ObjectKeyFromObject(secret), "openstack", "test-controller"),
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()

	data, err := os.ReadFile(filepath.Join(testenv.Root(), "config", "samples", "openstack", "seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		u.SetNamespace("seed")
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	var lb lbv1.LoadBalancer
	key := client.ObjectKey{Namespace: "seed", Name: "lb-test-1"}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := k8s.Get(ctx, key, &lb); err != nil {
			t.Fatal(err)
		}
		if lb.Status.ProvisioningStatus == lbv1.ProvisioningActive && meta.IsStatusConditionTrue(lb.Status.Conditions, lbv1.ConditionFloatingIPAttached) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb-test-1 not ACTIVE with a floating IP: %+v", lb.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(lb.Status.VIPAddress, "192.0.2.") || lb.Status.VIPPortID == "" || !strings.HasPrefix(lb.Status.FloatingIPAddress, "203.0.113.") {
		t.Fatalf("status %+v", lb.Status)
	}

	// What the user's openstack CLI shows.
	if got := cli(t, "floating", "ip", "list", "--port", lb.Status.VIPPortID, "-f", "value", "-c", "Floating IP Address", "-c", "Fixed IP Address"); got != lb.Status.FloatingIPAddress+" "+lb.Status.VIPAddress {
		t.Fatalf("openstack floating ip list --port: %q", got)
	}
	if tags := cli(t, "port", "show", lb.Status.VIPPortID, "-f", "value", "-c", "tags"); !strings.Contains(tags, "l4lb-uid:"+string(lb.UID)) || !strings.Contains(tags, "l4lb-cluster:test-controller") {
		t.Fatalf("openstack port show tags: %q", tags)
	}
	if got, _ := ports.Get(ctx, neutron.Client(), np.ID).Extract(); !neutron.HasPair(*got, lb.Status.VIPAddress) {
		t.Fatalf("the node's port lacks the VIP pair: %v", got.AllowedAddressPairs)
	}

	if err := k8s.Delete(ctx, &lb); err != nil {
		t.Fatal(err)
	}
	for k8s.Get(ctx, key, &lbv1.LoadBalancer{}) == nil {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("lb-test-1 was not released")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := cli(t, "floating", "ip", "list", "-f", "value", "-c", "Floating IP Address"); strings.Contains(got, lb.Status.FloatingIPAddress) {
		t.Fatalf("floating IP %s is left: %q", lb.Status.FloatingIPAddress, got)
	}
	if _, err := ports.Get(ctx, neutron.Client(), lb.Status.VIPPortID).Extract(); !neutron.IsNotFound(err) {
		t.Fatalf("the VIP port is left: %v", err)
	}
	if got, _ := ports.Get(ctx, neutron.Client(), np.ID).Extract(); neutron.HasPair(*got, lb.Status.VIPAddress) {
		t.Fatal("the node's port keeps the VIP pair")
	}

	// The same through a Service of type LoadBalancer, written for cloud-provider-openstack:
	// a Neutron VIP port and a floating IP, both in its status; released when it stops being a
	// LoadBalancer Service. (This API server has no garbage collector to delete the objects of a
	// deleted Service; test/e2e deletes one on a real cluster.)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "seed", Name: "web", Annotations: map[string]string{
		services.AnnotationSubnetID: "private-subnet", services.AnnotationFloatingNetworkID: "public-net"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(services.Class),
			Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); len(svc.Status.LoadBalancer.Ingress) != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the Service has no floating IP and VIP: %+v", svc.Status.LoadBalancer)
		}
		time.Sleep(100 * time.Millisecond)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			t.Fatal(err)
		}
	}
	fip, vip := svc.Status.LoadBalancer.Ingress[0].IP, svc.Status.LoadBalancer.Ingress[1].IP
	if got := cli(t, "floating", "ip", "list", "-f", "value", "-c", "Floating IP Address", "-c", "Fixed IP Address"); !strings.Contains(got, fip+" "+vip) {
		t.Fatalf("the Service's ingress %s, %s is not a floating IP on its VIP in Neutron: %q", fip, vip, got)
	}
	svc.Spec.Type, svc.Spec.LoadBalancerClass = corev1.ServiceTypeClusterIP, nil
	svc.Spec.Ports[0].NodePort = 0
	if err := k8s.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		got := cli(t, "floating", "ip", "list", "-f", "value", "-c", "Floating IP Address")
		vipPorts := cli(t, "port", "list", "--fixed-ip", "ip-address="+vip, "-f", "value", "-c", "ID")
		if !strings.Contains(got, fip) && vipPorts == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the Service stopped being a LoadBalancer: floating IPs %q, VIP ports %q", got, vipPorts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func cloudsFile() string {
	if d := os.Getenv("L4LB_OPENSTACK_DIR"); d != "" {
		return filepath.Join(d, "clouds.yaml")
	}
	return "/tmp/l4lb-openstack/clouds.yaml"
}
