package octavia_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l4lb/l4lb/api/octavia"
	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	osprov "github.com/l4lb/l4lb/controllers/openstack"
	"github.com/l4lb/l4lb/controllers/testenv"
	"github.com/l4lb/l4lb/controllers/vip"
)

// TestSeedWithTheOpenstackCLI runs the seed's walkthrough word for word with Debian's openstack
// CLI and its Octavia plugin, against l4lb's Octavia API registered in the real Keystone's
// catalog as the load-balancer service (hack/octavia-catalog.sh), the controller allocating
// the VIP as a real Neutron port on the seed's private-subnet: the names lb_test_1,
// 80_listener, ... 80_healthcheck; the lists print what Octavia would; the statuses reach
// ACTIVE and ONLINE (members are the seed's app on loopback); the floating IP step
// associates the user's floating IP with the VIP port; kubectl sees the objects; and the
// CLI's deletes remove them. (The seed's member addresses were lost from its text: the
// back-ends' are used.)
func TestSeedWithTheOpenstackCLI(t *testing.T) {
	defer catch(t)
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatal("the openstack CLI is missing: hack/openstack.sh up installs python3-openstackclient and python3-octaviaclient")
	}
	l := newLabWith(t, func(mgr ctrl.Manager, secret client.ObjectKey) map[lbv1.Provider]vip.Provider {
		return map[lbv1.Provider]vip.Provider{
			lbv1.ProviderStatic:    vip.NewStatic(nil, mgr.GetClient()),
			lbv1.ProviderOpenStack: osprov.New(mgr, secret, "openstack", "test-octavia-cli"),
		}
	})
	ctx := l.ctx
	mustDo(l.k8s.Create(ctx, &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "loopback"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"127.0.0.0/8"}}}))
	// The seed's back-ends: the Flask app's answers on 127.0.0.21 and .22, ports 80 and 443.
	for _, ip := range []string{"127.0.0.21", "127.0.0.22"} {
		for _, port := range []string{"80", "443"} {
			ln := must(net.Listen("tcp", ip+":"+port))
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/health" {
					fmt.Fprint(w, "healthy!")
					return
				}
				fmt.Fprintf(w, "Server : backend @ %s", ip)
			})}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		}
	}

	// The catalog: load-balancer at this server, as an administrator registers it.
	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	mustDo(os.WriteFile(clouds, cloudsYAML, 0o600))
	env := append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=l4lb-local")
	cli := func(args ...string) string {
		cmd := exec.Command("openstack", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	script := exec.Command(filepath.Join(testenv.Root(), "hack", "octavia-catalog.sh"), l.url)
	script.Env = env
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("hack/octavia-catalog.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		cmd := exec.Command("openstack", "service", "delete", "octavia")
		cmd.Env = env
		cmd.Run()
	})

	// The seed, in order.
	subnet := cli("subnet", "list", "--name", "private-subnet", "-f", "value", "-c", "ID")
	cli("loadbalancer", "create", "--vip-subnet-id", subnet, "--name", "lb_test_1")
	if out := cli("loadbalancer", "list"); !strings.Contains(out, "lb_test_1") || !strings.Contains(out, "l4lb") {
		t.Fatalf("loadbalancer list:\n%s", out)
	}
	for _, port := range []string{"80", "443"} {
		cli("loadbalancer", "listener", "create", "--name", port+"_listener", "--protocol", "TCP", "--protocol-port", port, "lb_test_1")
	}
	if out := cli("loadbalancer", "listener", "list", "-f", "value", "-c", "name", "-c", "protocol_port"); !strings.Contains(out, "80_listener 80") || !strings.Contains(out, "443_listener 443") {
		t.Fatalf("listener list:\n%s", out)
	}
	for _, port := range []string{"80", "443"} {
		cli("loadbalancer", "pool", "create", "--name", port+"_pool", "--listener", port+"_listener", "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN")
		for i, ip := range []string{"127.0.0.21", "127.0.0.22"} {
			cli("loadbalancer", "member", "create", "--name", fmt.Sprintf("%s_member_%d", port, i+1), "--address", ip, "--protocol-port", port, port+"_pool")
		}
		if out := cli("loadbalancer", "member", "list", port+"_pool", "-f", "value", "-c", "name", "-c", "address"); out != fmt.Sprintf("%s_member_1 127.0.0.21\n%s_member_2 127.0.0.22", port, port) {
			t.Fatalf("member list %s_pool:\n%s", port, out)
		}
	}
	cli("loadbalancer", "healthmonitor", "create", "--name", "80_healthcheck", "--delay", "60", "--timeout", "20", "--max-retries", "2", "--url-path", "/health", "--type", "http", "80_pool")

	// ACTIVE and ONLINE, as the seed expects before its floating IP step.
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		out := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "provisioning_status", "-c", "operating_status")
		if out == "ONLINE\nACTIVE" || out == "ACTIVE\nONLINE" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("lb_test_1 is %q two minutes on", out)
		}
	}
	fip := cli("floating", "ip", "create", "public-net", "-f", "value", "-c", "floating_ip_address")
	t.Cleanup(func() {
		cmd := exec.Command("openstack", "floating", "ip", "delete", fip)
		cmd.Env = env
		cmd.Run()
	})
	vipPort := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "vip_port_id")
	cli("floating", "ip", "set", "--port", vipPort, fip)
	vipAddr := cli("loadbalancer", "show", "lb_test_1", "-f", "value", "-c", "vip_address")
	if out := cli("floating", "ip", "list", "-f", "value", "-c", "Floating IP Address", "-c", "Fixed IP Address"); !strings.Contains(out, fip+" "+vipAddr) {
		t.Fatalf("floating IP %s not on the VIP %s:\n%s", fip, vipAddr, out)
	}

	// l4lb reports the user's floating IP once it looks at the load balancer again (a change,
	// as here, or its periodic check against the cloud).
	cli("loadbalancer", "set", "--description", "with a floating IP", "lb_test_1")
	for end := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var lbs lbv1.LoadBalancerList
		mustDo(l.k8s.List(ctx, &lbs))
		if len(lbs.Items) == 1 && lbs.Items[0].Status.FloatingIPAddress == fip {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the LoadBalancer's status does not report the floating IP %s a minute on: %+v", fip, lbs.Items)
		}
	}

	// The objects, as kubectl shows them.
	var lbs lbv1.LoadBalancerList
	mustDo(l.k8s.List(ctx, &lbs, client.HasLabels{}))
	found := false
	for _, lb := range lbs.Items {
		if lb.Annotations[octavia.NameAnnotation] == "lb_test_1" && lb.Status.VIPPortID == vipPort && lb.Status.VIPAddress == vipAddr {
			found = true
		}
	}
	if !found {
		t.Fatalf("no LoadBalancer object for lb_test_1 with port %s and VIP %s", vipPort, vipAddr)
	}

	// Deleting through the CLI removes them; the user's floating IP stays theirs.
	cli("loadbalancer", "delete", "--cascade", "lb_test_1")
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		var left lbv1.LoadBalancerList
		mustDo(l.k8s.List(ctx, &left))
		if len(left.Items) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d load balancers two minutes after the CLI deleted lb_test_1", len(left.Items))
		}
	}
	if out := cli("floating", "ip", "list", "-f", "value", "-c", "Floating IP Address"); !strings.Contains(out, fip) {
		t.Fatalf("the user's floating IP %s was deleted with the load balancer", fip)
	}
}
