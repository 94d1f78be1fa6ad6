//go:build conformance

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gophercloudos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/routers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
)

// The cluster's LAN as a Neutron subnet: OCCM's VIPs come from its allocation pool.
const (
	occmPoolStart = "198.51.100.210"
	occmPoolEnd   = "198.51.100.229"
)

// TestCloudProviderOpenStack runs cloud-provider-openstack's controller manager (OCCM, built
// unchanged from the Go module proxy by hack/conformance.sh, path in L4LB_OCCM) with
// --controllers=service against l4lb's Octavia API on the project's cluster, as a cloud with
// Octavia runs it: its credentials are a project user's with Octavia's and Neutron's member
// roles, and it finds l4lb in Keystone's catalog. Kubernetes Services of type LoadBalancer get
// their addresses and carry traffic to the pods; a node added and removed changes the
// members through the batch call; loadBalancerSourceRanges are enforced; OCCM's timeout and
// monitor annotations reach l4lb's objects; a second Service shares the first's load
// balancer; a third gets a floating IP on the VIP's port; deleting the Services leaves
// nothing in l4lb or Neutron; OCCM's log shows no error.
func TestCloudProviderOpenStack(t *testing.T) {
	occm := os.Getenv("L4LB_OCCM")
	if occm == "" {
		t.Fatal("L4LB_OCCM is not set: make conformance builds cloud-provider-openstack and sets it")
	}
	k := newCluster(t)
	k.images()
	clouds, down, err := cloudtest.Up()
	must(t, err)
	t.Cleanup(down)
	k.octaviaAPI(clouds)
	ctx := k.ctx

	// The administrator's part: the cluster's LAN in Neutron (shared, routed to the external
	// network so that floating IPs can point at it) and a project for the cluster.
	nc := adminNetwork(t, ctx, clouds)
	lan, err := networks.Create(ctx, nc, networks.CreateOpts{Name: "occm-lan", Shared: ptrTo(true)}).Extract()
	must(t, err)
	t.Cleanup(func() { networks.Delete(context.Background(), nc, lan.ID) })
	gw := "198.51.100.1"
	sub, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: lan.ID, Name: "occm-lan", CIDR: "198.51.100.0/24", IPVersion: gophercloud.IPv4,
		GatewayIP: &gw, EnableDHCP: ptrTo(false), AllocationPools: []subnets.AllocationPool{{Start: occmPoolStart, End: occmPoolEnd}}}).Extract()
	must(t, err)
	t.Cleanup(func() { subnets.Delete(context.Background(), nc, sub.ID) })
	public := networkNamed(t, nc, "public-net")
	router := routerNamed(t, nc, "router-1")
	_, err = routers.AddInterface(ctx, nc, router, routers.AddInterfaceOpts{SubnetID: sub.ID}).Extract()
	must(t, err)
	t.Cleanup(func() {
		routers.RemoveInterface(context.Background(), nc, router, routers.RemoveInterfaceOpts{SubnetID: sub.ID})
	})
	u := k.projectUser(clouds, "member", "load-balancer_member")

	// OCCM, as its manifests run it: in the node's network (host network), with its
	// cloud.conf, every option of [LoadBalancer] at its default but the VIP's subnet and the
	// floating network (its default provider, amphora, is one l4lb answers to).
	conf := filepath.Join(k.dir, "cloud.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[Global]
auth-url = http://198.51.100.1:15000/v3
user-id = %s
password = %s
tenant-id = %s
region = %s

[LoadBalancer]
subnet-id = %s
floating-network-id = %s
`, u.user, u.password, u.project, clusterRegion, sub.ID, public)), 0o600))
	logPath := filepath.Join(k.dir, "occm.log")
	logFile, err := os.Create(logPath)
	must(t, err)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+k.ns, occm, "--cloud-provider=openstack", "--cloud-config="+conf,
		"--kubeconfig="+k.kubeconfig, "--controllers=service", "--leader-elect=false", "--secure-port=0", "--cluster-name=e2e", "--v=2")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	must(t, cmd.Start())
	occmLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
		if t.Failed() {
			t.Logf("OCCM's log:\n%s", tail(occmLog(), 60))
		}
	})

	ns := "occm"
	must(t, k.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	t.Cleanup(func() { k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })
	t.Cleanup(func() { k.deleteServices(ns) }) // first, while OCCM runs: it removes its finalizers
	must(t, k.c.Create(ctx, echoDeployment(ns, 2)))
	k.rollout(ns, "echo")

	// A Service on the LAN only (OCCM's internal annotation), with its timeout and monitor
	// annotations.
	web := lbService(ns, "web", 80, map[string]string{
		"service.beta.kubernetes.io/openstack-internal-load-balancer": "true",
		"loadbalancer.openstack.org/timeout-client-data":              "12000",
		"loadbalancer.openstack.org/timeout-member-connect":           "3000",
		"loadbalancer.openstack.org/enable-health-monitor":            "true",
		"loadbalancer.openstack.org/health-monitor-delay":             "3",
		"loadbalancer.openstack.org/health-monitor-timeout":           "2",
		"loadbalancer.openstack.org/health-monitor-max-retries":       "2",
	})
	must(t, k.c.Create(ctx, web))
	addr := k.ingress(ns, "web", occmLog)
	if !inPool(addr) {
		t.Fatalf("web's address %s is not from the subnet's pool %s-%s", addr, occmPoolStart, occmPoolEnd)
	}
	k.servesBoth("http://"+addr+"/", 2)
	t.Logf("web: %s from the subnet's pool, both pods answer through it", addr)

	lb, l, p, hm := k.occmObjects(addr, 80)
	if lb.Status.VIPSubnetID != sub.ID || lb.Status.VIPPortID == "" {
		t.Fatalf("the load balancer's VIP: subnet %q (want %q), port %q", lb.Status.VIPSubnetID, sub.ID, lb.Status.VIPPortID)
	}
	if d := l.Spec.TimeoutClientData; d == nil || d.Duration != 12*time.Second {
		t.Fatalf("listener timeoutClientData %v, OCCM's annotation says 12000 ms", d)
	}
	if d := l.Spec.TimeoutMemberConnect; d == nil || d.Duration != 3*time.Second {
		t.Fatalf("listener timeoutMemberConnect %v, OCCM's annotation says 3000 ms", d)
	}
	if hm == nil || hm.Spec.Delay.Duration != 3*time.Second || hm.Spec.Timeout.Duration != 2*time.Second || hm.Spec.MaxRetries != 2 {
		t.Fatalf("health monitor %+v, OCCM's annotations say delay 3, timeout 2, max retries 2", hm)
	}
	var svc corev1.Service
	must(t, k.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &svc))
	nodePort := svc.Spec.Ports[0].NodePort
	if got := memberAddrs(p); !slices.Equal(got, []string{fmt.Sprintf("198.51.100.2:%d", nodePort)}) {
		t.Fatalf("members %v, want the node at its node port %d", got, nodePort)
	}

	// A node joins and leaves: OCCM updates the members with the batch call.
	// Registered with its address, as a kubelet registers its node (the service controller
	// syncs on a node's arrival, not on an address change).
	extra := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "occm-extra"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.3"}}}}
	must(t, k.c.Create(ctx, extra))
	t.Cleanup(func() { k.c.Delete(context.Background(), extra) })
	k.waitMembers(addr, 80, []string{fmt.Sprintf("198.51.100.2:%d", nodePort), fmt.Sprintf("198.51.100.3:%d", nodePort)})
	must(t, k.c.Delete(ctx, extra))
	k.waitMembers(addr, 80, []string{fmt.Sprintf("198.51.100.2:%d", nodePort)})
	batch := regexp.MustCompile(`method=PUT path=/v2(\.0)?/lbaas/pools/[0-9a-f-]+/members code=202`)
	if !batch.MatchString(k.octaviaLogs()) {
		t.Fatal("no batch member update (PUT /pools/{id}/members, 202) in the Octavia API's log")
	}
	k.servesBoth("http://"+addr+"/", 2)
	t.Log("a node added and removed: members followed, through the batch call")

	// loadBalancerSourceRanges: another client's range only, then this machine's.
	k.sourceRanges(ns, "web", "203.0.113.99/32")
	k.waitCIDRs(addr, 80, []string{"203.0.113.99/32"})
	for range 3 {
		if s, err := fetch("http://" + addr + "/"); err == nil {
			t.Fatalf("a client outside loadBalancerSourceRanges was answered: %q", s)
		}
	}
	k.sourceRanges(ns, "web", "198.51.100.1/32")
	k.waitCIDRs(addr, 80, []string{"198.51.100.1/32"})
	k.servesBoth("http://"+addr+"/", 2)
	t.Log("loadBalancerSourceRanges: another range refused this client, its own range admitted it")

	// A Service with a floating IP (OCCM's default): its address is the floating IP, which
	// points at the VIP's port. Neutron here moves no packets: traffic goes to the VIP.
	must(t, k.c.Create(ctx, lbService(ns, "public", 80, nil)))
	fipAddr := k.ingress(ns, "public", occmLog)
	fips := listFIPs(t, nc, floatingips.ListOpts{FloatingIP: fipAddr})
	if len(fips) != 1 || fips[0].FloatingNetworkID != public {
		t.Fatalf("the public Service's address %s: floating IPs %+v", fipAddr, fips)
	}
	var publicLB *lbv1.LoadBalancer
	for _, o := range k.l4lbLoadBalancers() {
		if o.Status.VIPPortID == fips[0].PortID {
			publicLB = &o
		}
	}
	if publicLB == nil {
		t.Fatalf("floating IP %s points at port %s, no l4lb load balancer's VIP", fipAddr, fips[0].PortID)
	}
	k.servesBoth("http://"+publicLB.Status.VIPAddress+"/", 2)

	// A second Service on the public one's load balancer (OCCM's shared mode, which it
	// allows for external Services only).
	var pub corev1.Service
	must(t, k.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "public"}, &pub))
	lbID := pub.Annotations["loadbalancer.openstack.org/load-balancer-id"]
	if lbID == "" {
		t.Fatalf("OCCM did not annotate the public Service with its load balancer: %v", pub.Annotations)
	}
	must(t, k.c.Create(ctx, lbService(ns, "public-alt", 8081, map[string]string{"loadbalancer.openstack.org/load-balancer-id": lbID})))
	if got := k.ingress(ns, "public-alt", occmLog); got != fipAddr {
		t.Fatalf("the sharing Service's address is %s, the shared load balancer's %s", got, fipAddr)
	}
	k.servesBoth("http://"+net.JoinHostPort(publicLB.Status.VIPAddress, "8081")+"/", 2)
	if n := len(k.l4lbLoadBalancers()); n != 2 {
		t.Fatalf("%d l4lb load balancers for three Services, two sharing one", n)
	}
	t.Logf("public: floating IP %s on the VIP %s's port; public-alt shares its load balancer", fipAddr, publicLB.Status.VIPAddress)

	// Deleting the Services leaves nothing.
	k.deleteServices(ns)
	for end := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		lbs := k.l4lbLoadBalancers()
		vips := listPorts(t, nc, ports.ListOpts{NetworkID: lan.ID, DeviceOwner: ""})
		var left []string
		for _, p := range vips {
			if p.DeviceOwner != "network:router_interface" {
				left = append(left, p.ID)
			}
		}
		fips := listFIPs(t, nc, floatingips.ListOpts{ProjectID: u.project})
		if len(lbs) == 0 && len(left) == 0 && len(fips) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("3 minutes after the Services' deletion: %d l4lb load balancers, ports %v on the LAN, %d floating IPs", len(lbs), left, len(fips))
		}
	}
	t.Log("the Services deleted: no l4lb load balancer, VIP port or floating IP left")
	if errs := klogErrors(occmLog()); len(errs) > 0 {
		t.Fatalf("OCCM logged errors:\n%s", strings.Join(errs, "\n"))
	}
	k.noForbidden()
}

func ptrTo[T any](v T) *T { return &v }

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// klogErrors are the error lines (klog's E prefix) of log.
func klogErrors(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if len(line) > 5 && line[0] == 'E' && line[1] >= '0' && line[1] <= '9' {
			out = append(out, line)
		}
	}
	return out
}

// inPool says whether addr is in the LAN subnet's allocation pool (its last octet is).
func inPool(addr string) bool {
	ip := net.ParseIP(addr).To4()
	return ip != nil && strings.HasPrefix(addr, "198.51.100.") && ip[3] >= 210 && ip[3] <= 229
}

// adminNetwork is Neutron's API as the cloud's administrator, on this machine's loopback.
func adminNetwork(t *testing.T, ctx context.Context, clouds []byte) *gophercloud.ServiceClient {
	creds, err := openstack.FromSecret(map[string][]byte{"clouds.yaml": clouds, "cloud": []byte("l4lb-local")}, "")
	must(t, err)
	pc, err := gophercloudos.AuthenticatedClient(ctx, creds.Auth)
	must(t, err)
	nc, err := gophercloudos.NewNetworkV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	must(t, err)
	return nc
}

func networkNamed(t *testing.T, nc *gophercloud.ServiceClient, name string) string {
	pages, err := networks.List(nc, networks.ListOpts{Name: name}).AllPages(context.Background())
	must(t, err)
	list, err := networks.ExtractNetworks(pages)
	must(t, err)
	if len(list) != 1 {
		t.Fatalf("%d networks named %s", len(list), name)
	}
	return list[0].ID
}

func routerNamed(t *testing.T, nc *gophercloud.ServiceClient, name string) string {
	pages, err := routers.List(nc, routers.ListOpts{Name: name}).AllPages(context.Background())
	must(t, err)
	list, err := routers.ExtractRouters(pages)
	must(t, err)
	if len(list) != 1 {
		t.Fatalf("%d routers named %s", len(list), name)
	}
	return list[0].ID
}

func listFIPs(t *testing.T, nc *gophercloud.ServiceClient, opts floatingips.ListOpts) []floatingips.FloatingIP {
	pages, err := floatingips.List(nc, opts).AllPages(context.Background())
	must(t, err)
	list, err := floatingips.ExtractFloatingIPs(pages)
	must(t, err)
	return list
}

func listPorts(t *testing.T, nc *gophercloud.ServiceClient, opts ports.ListOpts) []ports.Port {
	pages, err := ports.List(nc, opts).AllPages(context.Background())
	must(t, err)
	list, err := ports.ExtractPorts(pages)
	must(t, err)
	return list
}

// echoDeployment is the seed's app in n pods, ready when it answers /health.
func echoDeployment(ns string, n int32) *appsv1.Deployment {
	labels := map[string]string{"app": "echo"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec: appsv1.DeploymentSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "echo", Image: seedImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/seedapp", "-p", "8080"},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1}}}}}},
	}
}

// lbService is a Service of type LoadBalancer with no class (the cloud provider's) on port,
// to the echo pods' 8080.
func lbService(ns, name string, port int32, annotations map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
}

// rollout waits until the Deployment's pods are all ready.
func (k *cluster) rollout(ns, name string) {
	run(k.t, []string{"KUBECONFIG=" + k.kubeconfig}, "kubectl", "-n", ns, "rollout", "status", "deployment/"+name, "--timeout=3m")
}

// ingress waits for the Service's load balancer address.
func (k *cluster) ingress(ns, name string, occmLog func() string) string {
	for end := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		var svc corev1.Service
		must(k.t, k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc))
		if in := svc.Status.LoadBalancer.Ingress; len(in) > 0 && in[0].IP != "" {
			return in[0].IP
		}
		if time.Now().After(end) {
			k.logs()
			k.t.Fatalf("Service %s has no address 3 minutes on; OCCM:\n%s", name, tail(occmLog(), 30))
		}
	}
}

// servesBoth fetches url until each of the n echo pods has answered, and fails on any error.
func (k *cluster) servesBoth(url string, n int) {
	seen := map[string]bool{}
	for i := 0; len(seen) < n; i++ {
		s, err := fetch(url)
		if err != nil {
			k.t.Fatalf("%s: %v", url, err)
		}
		seen[strings.SplitN(s, " @ ", 2)[0]] = true
		if i == 50 {
			k.t.Fatalf("%s: 50 answers from %v only", url, seen)
		}
	}
}

// l4lbLoadBalancers are the cluster's l4lb load balancers, in every namespace.
func (k *cluster) l4lbLoadBalancers() []lbv1.LoadBalancer {
	var list lbv1.LoadBalancerList
	must(k.t, k.c.List(k.ctx, &list))
	return list.Items
}

// occmObjects are the l4lb objects OCCM made for the VIP addr and port.
func (k *cluster) occmObjects(addr string, port int32) (*lbv1.LoadBalancer, *lbv1.Listener, *lbv1.Pool, *lbv1.HealthMonitor) {
	t := k.t
	var lb *lbv1.LoadBalancer
	for _, o := range k.l4lbLoadBalancers() {
		if o.Status.VIPAddress == addr {
			lb = &o
		}
	}
	if lb == nil {
		t.Fatalf("no l4lb load balancer has the VIP %s", addr)
	}
	var ls lbv1.ListenerList
	must(t, k.c.List(k.ctx, &ls, client.InNamespace(lb.Namespace)))
	var l *lbv1.Listener
	for _, o := range ls.Items {
		if o.Spec.LoadBalancerRef.Name == lb.Name && o.Spec.ProtocolPort == port {
			l = &o
		}
	}
	if l == nil {
		t.Fatalf("no listener on port %d of %s", port, lb.Name)
	}
	var ps lbv1.PoolList
	must(t, k.c.List(k.ctx, &ps, client.InNamespace(lb.Namespace)))
	var p *lbv1.Pool
	for _, o := range ps.Items {
		if o.Spec.ListenerName() == l.Name {
			p = &o
		}
	}
	if p == nil {
		t.Fatalf("no pool for listener %s", l.Name)
	}
	var hms lbv1.HealthMonitorList
	must(t, k.c.List(k.ctx, &hms, client.InNamespace(lb.Namespace)))
	for _, o := range hms.Items {
		if o.Spec.PoolRef.Name == p.Name {
			return lb, l, p, &o
		}
	}
	return lb, l, p, nil
}

func memberAddrs(p *lbv1.Pool) []string {
	var out []string
	for _, m := range p.Spec.Members {
		out = append(out, net.JoinHostPort(m.Address, fmt.Sprint(m.ProtocolPort)))
	}
	slices.Sort(out)
	return out
}

func (k *cluster) waitMembers(addr string, port int32, want []string) {
	for end := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		_, _, p, _ := k.occmObjects(addr, port)
		got := memberAddrs(p)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(end) {
			k.t.Fatalf("members %v, want %v, 3 minutes on", got, want)
		}
	}
}

func (k *cluster) waitCIDRs(addr string, port int32, want []string) {
	for end := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		_, l, _, _ := k.occmObjects(addr, port)
		if slices.Equal(l.Spec.AllowedCIDRs, want) {
			time.Sleep(2 * time.Second) // the agents apply what the listener says
			return
		}
		if time.Now().After(end) {
			k.t.Fatalf("listener allowedCIDRs %v, want %v, 3 minutes on", l.Spec.AllowedCIDRs, want)
		}
	}
}

func (k *cluster) sourceRanges(ns, name string, cidrs ...string) {
	var svc corev1.Service
	must(k.t, k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc))
	svc.Spec.LoadBalancerSourceRanges = cidrs
	must(k.t, k.c.Update(k.ctx, &svc))
}

// deleteServices deletes the namespace's Services and waits (up to 3 minutes) until they are
// gone, their finalizers removed by whoever holds them.
func (k *cluster) deleteServices(ns string) {
	ctx := context.Background()
	var list corev1.ServiceList
	k.c.List(ctx, &list, client.InNamespace(ns))
	for _, s := range list.Items {
		k.c.Delete(ctx, &s)
	}
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		if err := k.c.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) == 0 {
			return
		}
	}
}

// octaviaLogs is the Octavia API pods' logs.
func (k *cluster) octaviaLogs() string {
	var b strings.Builder
	for name, l := range k.podLogs() {
		if strings.HasPrefix(name, "l4lb-octavia-api") {
			b.WriteString(l)
		}
	}
	return b.String()
}
