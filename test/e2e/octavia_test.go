package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gophercloudos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/endpoints"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/regions"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/services"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/listeners"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/monitors"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/pools"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
	"github.com/l4lb/l4lb/test/lantest"
)

// octaviaVIP is the address the Octavia API's load balancer asks for (static provider).
const octaviaVIP = "198.51.100.201"

// TestOctaviaAPIOnTheCluster turns the chart's Octavia API on as a user does (its Deployment,
// Service and RBAC) against the real Keystone, which the pods reach on the machine's side of
// the cluster's link, and drives it through its Service as cloud-provider-openstack does,
// with gophercloud and a project member's token: a load balancer, a TCP listener, a
// round-robin pool with the Flask host as member and an HTTP monitor on /health, which reach
// ACTIVE and ONLINE; the VIP answers from the machine; the statistics count those requests
// (the API reading the holding agent's metrics with its service account's own rights); a
// cascade delete removes the objects. No l4lb pod's log shows an RBAC refusal.
func TestOctaviaAPIOnTheCluster(t *testing.T) {
	k := newCluster(t)
	k.images()
	clouds, down, err := cloudtest.Up()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down)
	api := k.octaviaAPI(clouds)

	must(t, k.c.Create(k.ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "octavia"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{octaviaVIP + "/32"}}}))
	t.Cleanup(func() {
		k.c.Delete(context.Background(), &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "octavia"}})
	})
	flask := k.flaskHost()
	lbc := k.projectMember(clouds, api)
	ctx := k.ctx

	// As cloud-provider-openstack does: each call once the load balancer is ACTIVE again.
	lb, err := loadbalancers.Create(ctx, lbc, loadbalancers.CreateOpts{Name: "e2e_lb", VipAddress: octaviaVIP}).Extract()
	must(t, err)
	t.Cleanup(func() {
		// A failed run must not leave its load balancer, and its address, to the next test:
		// deleted while the controller still runs (before the uninstall), so its finalizer goes.
		loadbalancers.Delete(context.Background(), lbc, lb.ID, loadbalancers.DeleteOpts{Cascade: true})
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
			var lbs lbv1.LoadBalancerList
			if k.c.List(context.Background(), &lbs) == nil && len(lbs.Items) == 0 {
				return
			}
		}
	})
	k.waitLB(lbc, lb.ID, "")
	l, err := listeners.Create(ctx, lbc, listeners.CreateOpts{Name: "80_listener", LoadbalancerID: lb.ID, Protocol: listeners.ProtocolTCP, ProtocolPort: 80}).Extract()
	must(t, err)
	k.waitLB(lbc, lb.ID, "")
	p, err := pools.Create(ctx, lbc, pools.CreateOpts{Name: "80_pool", ListenerID: l.ID, Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodRoundRobin,
		Members: []pools.CreateMemberOpts{{Name: "flask", Address: flask, ProtocolPort: 8080}}}).Extract()
	must(t, err)
	k.waitLB(lbc, lb.ID, "")
	_, err = monitors.Create(ctx, lbc, monitors.CreateOpts{Name: "80_healthcheck", PoolID: p.ID, Type: monitors.TypeHTTP, URLPath: "/health",
		Delay: 5, Timeout: 2, MaxRetries: 2}).Extract()
	must(t, err)
	k.waitLB(lbc, lb.ID, "ONLINE")

	const requests = 5
	for i := 0; i < requests; {
		s, err := fetch("http://" + octaviaVIP + "/")
		if err != nil {
			time.Sleep(200 * time.Millisecond) // the VIP is announced a moment after ACTIVE
			continue
		}
		if !strings.HasPrefix(s, "Server : flask-member") {
			t.Fatalf("the VIP answered %q", s)
		}
		i++
	}
	// The kernel path's counters reach the metrics once a second (docs/metrics.md); Octavia's
	// own come with the amphorae's heartbeats, every 10 s.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err := loadbalancers.GetStats(ctx, lbc, lb.ID).Extract()
		must(t, err)
		if st.TotalConnections >= requests && st.BytesIn > 0 && st.BytesOut > 0 {
			t.Logf("statistics after %d requests: %+v", requests, st)
			break
		}
		if time.Now().After(end) {
			t.Fatalf("10 s after %d requests the load balancer's statistics are %+v", requests, st)
		}
	}

	must(t, loadbalancers.Delete(ctx, lbc, lb.ID, loadbalancers.DeleteOpts{Cascade: true}).ExtractErr())
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		var lbs lbv1.LoadBalancerList
		must(t, k.c.List(ctx, &lbs))
		_, err := loadbalancers.Get(ctx, lbc, lb.ID).Extract()
		if len(lbs.Items) == 0 && gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("a minute after the cascade delete: %d LoadBalancers, get: %v", len(lbs.Items), err)
		}
	}
	k.noForbidden()
}

// clusterRegion is the catalog region of the cluster's own (as a site with its own endpoints
// would have): its pods reach the machine's Keystone and Neutron at 198.51.100.1, through
// relays to the machine's loopback.
const clusterRegion = "l4lb-cluster"

// octaviaAPI installs the chart with its Octavia API on and the OpenStack provider, with
// credentials for the cluster's region, registers the API's Service as that region's
// load-balancer endpoint, and returns its URL (reachable in the cluster's network).
func (k *cluster) octaviaAPI(clouds []byte) string {
	t := k.t
	keystone, err := url.Parse(cloudtest.KeystoneURL)
	must(t, err)
	neutron, err := url.Parse(cloudtest.NeutronURL)
	must(t, err)
	lantest.Relay(t, "198.51.100.1:"+keystone.Port(), keystone.Host)
	lantest.Relay(t, "198.51.100.1:"+neutron.Port(), neutron.Host)
	k.endpoint(clouds, "identity", "http://198.51.100.1:"+keystone.Port()+"/v3/")
	k.endpoint(clouds, "network", "http://198.51.100.1:"+neutron.Port()+"/")
	podClouds := bytes.Replace(clouds, []byte("region_name: RegionOne"), []byte("region_name: "+clusterRegion), 1)
	podClouds = bytes.ReplaceAll(podClouds, []byte(keystone.Host), []byte("198.51.100.1:"+keystone.Port()))
	must(t, k.c.Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-system"}}))
	t.Cleanup(func() {
		k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-system"}})
	})
	must(t, k.c.Create(k.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "openstack-credentials"},
		Data: map[string][]byte{"clouds.yaml": podClouds, "cloud": []byte("l4lb-local")}}))
	k.install("--set", "octaviaAPI.enabled=true", "--set", "octaviaAPI.createNamespaces=true",
		"--set", "controller.openstack.secretName=openstack-credentials", "--set", "controller.openstack.cloud=l4lb-local")
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		var dep appsv1.Deployment
		must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-octavia-api"}, &dep))
		if dep.Status.ReadyReplicas == *dep.Spec.Replicas {
			break
		}
		if time.Now().After(end) {
			k.logs()
			t.Fatalf("the Octavia API is not ready: %d/%d", dep.Status.ReadyReplicas, *dep.Spec.Replicas)
		}
	}
	var svc corev1.Service
	must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-octavia-api"}, &svc))
	api := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "9876") + "/"
	k.endpoint(clouds, "load-balancer", api)
	return api
}

// endpoint registers url as the public endpoint of the catalog's service of type kind in the
// cluster's region (making the region, and the service when Keystone has none of that type),
// until the test ends.
func (k *cluster) endpoint(clouds []byte, kind, url string) {
	t, ctx := k.t, k.ctx
	idc := adminIdentity(t, ctx, clouds)
	if _, err := regions.Create(ctx, idc, regions.CreateOpts{ID: clusterRegion}).Extract(); err != nil && !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Fatal(err)
	}
	pages, err := services.List(idc, services.ListOpts{ServiceType: kind}).AllPages(ctx)
	must(t, err)
	svcs, err := services.ExtractServices(pages)
	must(t, err)
	if len(svcs) == 0 {
		s, err := services.Create(ctx, idc, services.CreateOpts{Type: kind, Extra: map[string]any{"name": "octavia"}}).Extract()
		must(t, err)
		t.Cleanup(func() { services.Delete(context.Background(), idc, s.ID) })
		svcs = append(svcs, *s)
	}
	if len(svcs) != 1 {
		t.Fatalf("%d %s services in Keystone's catalog", len(svcs), kind)
	}
	ep, err := endpoints.Create(ctx, idc, endpoints.CreateOpts{Availability: gophercloud.AvailabilityPublic, Name: kind,
		Region: clusterRegion, URL: url, ServiceID: svcs[0].ID}).Extract()
	must(t, err)
	t.Cleanup(func() { endpoints.Delete(context.Background(), idc, ep.ID) })
}

// adminIdentity is Keystone's identity API as the cloud's administrator of clouds.
func adminIdentity(t *testing.T, ctx context.Context, clouds []byte) *gophercloud.ServiceClient {
	creds, err := openstack.FromSecret(map[string][]byte{"clouds.yaml": clouds, "cloud": []byte("l4lb-local")}, "")
	must(t, err)
	pc, err := gophercloudos.AuthenticatedClient(ctx, creds.Auth)
	must(t, err)
	idc, err := gophercloudos.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	must(t, err)
	return idc
}

// projectMember makes a Keystone project and a user with Octavia's load-balancer_member role, and returns the
// load-balancer client that user has at api: a token from the machine's Keystone, requests
// into the cluster's network (the Service's address).
func (k *cluster) projectMember(clouds []byte, api string) *gophercloud.ServiceClient {
	t, ctx := k.t, k.ctx
	u := k.projectUser(clouds, "load-balancer_member")
	upc, err := gophercloudos.AuthenticatedClient(ctx, gophercloud.AuthOptions{IdentityEndpoint: cloudtest.KeystoneURL,
		UserID: u.user, Password: u.password, Scope: &gophercloud.AuthScope{ProjectID: u.project}})
	must(t, err)
	// Keystone is on this machine's loopback; everything else in the cluster's network.
	upc.HTTPClient = http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			if strings.HasPrefix(addr, "127.") {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			err = lantest.In(k.ns, func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	return &gophercloud.ServiceClient{ProviderClient: upc, Endpoint: api, ResourceBase: api + "v2/"}
}

// projectUser is a Keystone project, and a user with roles in it, for the test's time.
type projectUser struct{ project, user, password string }

// projectUser makes a project and a user with roles (made when Keystone has none of that
// name, as a cloud with Octavia has its load-balancer_* roles: its deployment guide creates
// them).
func (k *cluster) projectUser(clouds []byte, roleNames ...string) projectUser {
	t, ctx := k.t, k.ctx
	idc := adminIdentity(t, ctx, clouds)
	name := fmt.Sprintf("e2e-%s-%d", strings.ToLower(t.Name()), os.Getpid())
	pr, err := projects.Create(ctx, idc, projects.CreateOpts{Name: name, DomainID: "default"}).Extract()
	must(t, err)
	t.Cleanup(func() { projects.Delete(context.Background(), idc, pr.ID) })
	u, err := users.Create(ctx, idc, users.CreateOpts{Name: name, DomainID: "default", Password: "pw-" + name}).Extract()
	must(t, err)
	t.Cleanup(func() { users.Delete(context.Background(), idc, u.ID) })
	for _, role := range roleNames {
		pages, err := roles.List(idc, roles.ListOpts{Name: role}).AllPages(ctx)
		must(t, err)
		rs, err := roles.ExtractRoles(pages)
		must(t, err)
		if len(rs) == 0 {
			r, err := roles.Create(ctx, idc, roles.CreateOpts{Name: role}).Extract()
			must(t, err)
			rs = append(rs, *r)
		}
		must(t, roles.Assign(ctx, idc, rs[0].ID, roles.AssignOpts{UserID: u.ID, ProjectID: pr.ID}).ExtractErr())
	}
	return projectUser{project: pr.ID, user: u.ID, password: "pw-" + name}
}

// waitLB waits until the load balancer is ACTIVE (and has operating status op, when given).
func (k *cluster) waitLB(lbc *gophercloud.ServiceClient, id, op string) {
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		lb, err := loadbalancers.Get(k.ctx, lbc, id).Extract()
		must(k.t, err)
		if lb.ProvisioningStatus == "ACTIVE" && (op == "" || lb.OperatingStatus == op) {
			return
		}
		if time.Now().After(end) {
			k.logs()
			k.t.Fatalf("load balancer %s is %s/%s two minutes on", id, lb.ProvisioningStatus, lb.OperatingStatus)
		}
	}
}
