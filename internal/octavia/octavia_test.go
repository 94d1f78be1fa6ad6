package octavia_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gophercloud/gophercloud/v2"
	gophercloudos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/listeners"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/monitors"
	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/pools"
	"github.com/gophercloud/gophercloud/v2/pagination"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/octavia"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
	"github.com/l4lb/l4lb/test/testenv"
)

var (
	cloudsYAML []byte
	cloudErr   error
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	var down func()
	cloudsYAML, down, cloudErr = cloudtest.Up()
	code := m.Run()
	down()
	os.Exit(code)
}

// lab is a real Keystone (hack/openstack.sh), a real API server running the controller and a
// dataplane agent, and the Octavia API between them; users of two projects.
type lab struct {
	t     *testing.T
	ctx   context.Context
	env   *testenv.Env
	api   *octavia.Server     // as the chart runs it: its service account's rights
	ks    *openstack.Keystone // the API's validations, cached for a second (not the default 30 s)
	logs  *syncBuffer         // what the API logged
	k8s   client.Client
	url   string
	admin *gophercloud.ServiceClient // identity, as the cloud's admin
	users map[string]*gophercloud.ProviderClient
	proj  map[string]string // project name -> ID
}

func newLab(t *testing.T) *lab { return newLabWith(t, nil, "node-1") }

// newLabWith is newLab with the controller's providers given (static alone when nil; the
// openstack one reads the credentials Secret the lab makes) and the in-process agent's node
// (none when empty: the test runs its agents itself).
func newLabWith(t *testing.T, providers func(ctrl.Manager, client.ObjectKey) map[lbv1.Provider]ipam.Provider, agentNode string) *lab {
	if errors.Is(cloudErr, cloudtest.ErrNotRoot) {
		t.Skip(cloudErr)
	}
	if cloudErr != nil {
		t.Fatal(cloudErr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	env := testenv.ForTest(t)
	secret := client.ObjectKey{Namespace: "l4lb-system", Name: "openstack-credentials"}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: secret.Namespace}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secret.Namespace, Name: secret.Name},
			Data: map[string][]byte{"clouds.yaml": cloudsYAML, "cloud": []byte("l4lb-local")}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cp := testenv.ControlPlane{AgentNode: agentNode}
	if providers != nil {
		cp.Providers = func(mgr ctrl.Manager) map[lbv1.Provider]ipam.Provider { return providers(mgr, secret) }
	}
	engine, err := env.Run(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if engine != nil {
		t.Cleanup(engine.Close)
	}
	if err := env.Client.Create(ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"198.51.100.16/28"}}}); err != nil {
		t.Fatal(err)
	}
	creds := func(context.Context) (openstack.Credentials, error) {
		return openstack.FromSecret(map[string][]byte{"clouds.yaml": cloudsYAML, "cloud": []byte("l4lb-local")}, "")
	}
	ks := &openstack.Keystone{Credentials: creds, CacheFor: time.Second}
	logs := &syncBuffer{}
	api := &octavia.Server{Client: chartIdentity(t, env), Validate: ks.Validate, CreateNamespaces: true,
		Log: slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, logs), nil))}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)

	c, err := creds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := gophercloudos.AuthenticatedClient(ctx, c.Auth)
	if err != nil {
		t.Fatal(err)
	}
	idc, err := gophercloudos.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, ctx: ctx, env: env, api: api, ks: ks, logs: logs, k8s: env.Client, url: srv.URL, admin: idc, users: map[string]*gophercloud.ProviderClient{}, proj: map[string]string{}}
	suffix := fmt.Sprint(os.Getpid())
	for _, p := range []string{"alpha", "beta"} {
		pr, err := projects.Create(ctx, idc, projects.CreateOpts{Name: p + "-" + suffix, DomainID: "default"}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		l.proj[p] = pr.ID
		t.Cleanup(func() { projects.Delete(context.Background(), idc, pr.ID) })
	}
	// Octavia's roles, as a cloud with Octavia has them.
	for user, grant := range map[string][2]string{
		"alice": {"alpha", "load-balancer_member"},
		"bob":   {"beta", "load-balancer_member"},
		"mia":   {"beta", "member"},
		"olive": {"alpha", "load-balancer_observer"},
		"ada":   {"beta", "load-balancer_admin"},
	} {
		role := l.role(grant[1])
		u, err := users.Create(ctx, idc, users.CreateOpts{Name: user + "-" + suffix, DomainID: "default", Password: "pw-" + user}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { users.Delete(context.Background(), idc, u.ID) })
		if err := roles.Assign(ctx, idc, role, roles.AssignOpts{UserID: u.ID, ProjectID: l.proj[grant[0]]}).ExtractErr(); err != nil {
			t.Fatal(err)
		}
		upc, err := gophercloudos.AuthenticatedClient(ctx, gophercloud.AuthOptions{IdentityEndpoint: cloudtest.KeystoneURL,
			UserID: u.ID, Password: "pw-" + user, Scope: &gophercloud.AuthScope{ProjectID: l.proj[grant[0]]}})
		if err != nil {
			t.Fatal(err)
		}
		l.users[user] = upc
	}
	return l
}

// chartIdentity installs what the chart installs for the Octavia API (its service account,
// ClusterRole, Role and bindings, with createNamespaces) and returns a client acting as that
// service account: the API runs with its own rights, which the tests then exercise.
func chartIdentity(t *testing.T, env *testenv.Env) client.Client {
	cmd := exec.Command(filepath.Join(testenv.Root(), "bin", "helm"), "template", "l4lb", "charts/l4lb", "--namespace", "l4lb-system",
		"--set", "octaviaAPI.enabled=true", "--set", "octaviaAPI.createNamespaces=true",
		"--set", "controller.openstack.secretName=openstack-credentials", "--show-only", "templates/octavia-api.yaml", "--show-only", "templates/user-roles.yaml")
	cmd.Dir = testenv.Root()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	docs, err := testenv.Documents(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range docs {
		if err := env.Client.Create(context.Background(), u); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:l4lb-system:l4lb-octavia-api",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:l4lb-system", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// role returns the ID of the role name, made when Keystone has none.
func (l *lab) role(name string) string {
	pages, err := roles.List(l.admin, roles.ListOpts{Name: name}).AllPages(l.ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	rs, _ := roles.ExtractRoles(pages)
	if len(rs) > 0 {
		return rs[0].ID
	}
	r, err := roles.Create(l.ctx, l.admin, roles.CreateOpts{Name: name}).Extract()
	if err != nil {
		l.t.Fatal(err)
	}
	return r.ID
}

// lb is the Octavia API as user sees it, through gophercloud's load-balancer client.
func (l *lab) lb(user string) *gophercloud.ServiceClient {
	return &gophercloud.ServiceClient{ProviderClient: l.users[user], Endpoint: l.url + "/", ResourceBase: l.url + "/v2.0/"}
}

// must and mustDo fail the test (through catch, deferred by each test) on an error, naming the
// line, so a chain of calls reads as the walkthrough does.
func must[T any](v T, err error) T {
	if err != nil {
		_, file, line, _ := runtime.Caller(1)
		panic(failure{fmt.Errorf("%s:%d: %w", filepath.Base(file), line, err)})
	}
	return v
}

func mustDo(err error) {
	if err != nil {
		_, file, line, _ := runtime.Caller(1)
		panic(failure{fmt.Errorf("%s:%d: %w", filepath.Base(file), line, err)})
	}
}

type failure struct{ err error }

func catch(t *testing.T) {
	if r := recover(); r != nil {
		if f, ok := r.(failure); ok {
			t.Fatal(f.err)
		}
		panic(r)
	}
}

func wantCode(t *testing.T, err error, code int, what string) {
	t.Helper()
	if !gophercloud.ResponseCodeIs(err, code) {
		t.Fatalf("%s: got %v, want HTTP %d", what, err, code)
	}
}

// TestSeedThroughGophercloud drives every resource through gophercloud's loadbalancer/v2
// packages (what cloud-provider-openstack uses), as the seed's walkthrough does: create, get,
// list with filters and pagination, update, the status tree, error codes, a fully populated
// create in one call, and deletes, cascade included; the objects are ordinary l4lb objects.
func TestSeedThroughGophercloud(t *testing.T) {
	defer catch(t)
	l := newLab(t)
	ctx := l.ctx
	alice := l.lb("alice")

	lb := must(loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{Name: "lb_test_1", VipAddress: "198.51.100.20"}).Extract())
	if lb.ProvisioningStatus != "PENDING_CREATE" || lb.Name != "lb_test_1" || lb.ProjectID != l.proj["alpha"] {
		t.Fatalf("created: %+v", lb)
	}
	var ports = map[int]string{}
	for _, port := range []int{80, 443} {
		li := must(listeners.Create(ctx, alice, listeners.CreateOpts{Name: fmt.Sprintf("%d_listener", port),
			Protocol: listeners.ProtocolTCP, ProtocolPort: port, LoadbalancerID: lb.ID}).Extract())
		p := must(pools.Create(ctx, alice, pools.CreateOpts{Name: fmt.Sprintf("%d_pool", port), ListenerID: li.ID,
			Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodRoundRobin}).Extract())
		for i := 1; i <= 2; i++ {
			must(pools.CreateMember(ctx, alice, p.ID, pools.CreateMemberOpts{Name: fmt.Sprintf("%d_member_%d", port, i),
				Address: fmt.Sprintf("127.0.0.%d", 10+i), ProtocolPort: port}).Extract())
		}
		ports[port] = p.ID
	}
	hm := must(monitors.Create(ctx, alice, monitors.CreateOpts{Name: "80_healthcheck", PoolID: ports[80], Type: "HTTP",
		Delay: 60, Timeout: 20, MaxRetries: 2, URLPath: "/health"}).Extract())
	// http_version not given reads back null, as Octavia's does (Terraform plans a change
	// on anything else).
	if hm.Delay != 60 || hm.URLPath != "/health" || len(hm.Pools) != 1 || hm.Pools[0].ID != ports[80] || hm.HTTPVersion != "" {
		t.Fatalf("health monitor: %+v", hm)
	}

	// The objects are l4lb's, in the project's namespace, with kubernetes names derived.
	ns := "openstack-" + l.proj["alpha"]
	var kl lbv1.Listener
	mustDo(l.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "80-listener"}, &kl))
	if kl.Annotations[octavia.NameAnnotation] != "80_listener" || kl.Spec.ProtocolPort != 80 {
		t.Fatalf("the Listener object: %+v", kl)
	}
	// ACTIVE once the controller and the dataplane have it.
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		got := must(loadbalancers.Get(ctx, alice, lb.ID).Extract())
		if got.ProvisioningStatus == "ACTIVE" && got.VipAddress == "198.51.100.20" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("not ACTIVE in a minute: %+v", got)
		}
	}

	// Lists: filters, pagination (a page of one member at a time), the status tree.
	all := must(loadbalancers.ExtractLoadBalancers(must(loadbalancers.List(alice, loadbalancers.ListOpts{Name: "lb_test_1"}).AllPages(ctx))))
	if len(all) != 1 || all[0].ID != lb.ID {
		t.Fatalf("loadbalancers named lb_test_1: %+v", all)
	}
	ls := must(listeners.ExtractListeners(must(listeners.List(alice, listeners.ListOpts{ProtocolPort: 443}).AllPages(ctx))))
	if len(ls) != 1 || ls[0].Name != "443_listener" || ls[0].DefaultPoolID != ports[443] {
		t.Fatalf("listeners on 443: %+v", ls)
	}
	pagesSeen := 0
	var names []string
	err := pools.ListMembers(alice, ports[80], pools.ListMembersOpts{Limit: 1}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		pagesSeen++
		ms, err := pools.ExtractMembers(p)
		for _, m := range ms {
			names = append(names, m.Name)
		}
		return true, err
	})
	if err != nil || pagesSeen < 2 || strings.Join(names, ",") != "80_member_1,80_member_2" {
		t.Fatalf("members one page at a time: %d pages, %v, %v", pagesSeen, names, err)
	}
	st := must(loadbalancers.GetStatuses(ctx, alice, lb.ID).Extract())
	if len(st.Loadbalancer.Listeners) != 2 || len(st.Loadbalancer.Listeners[0].Pools) != 1 || len(st.Loadbalancer.Listeners[0].Pools[0].Members) != 2 {
		t.Fatalf("status tree: %+v", st.Loadbalancer)
	}

	// Updates reach the objects.
	must(listeners.Update(ctx, alice, ls[0].ID, listeners.UpdateOpts{Description: ptr("tls later")}).Extract())
	must(loadbalancers.Update(ctx, alice, lb.ID, loadbalancers.UpdateOpts{Description: ptr("the seed's")}).Extract())
	if got := must(loadbalancers.Get(ctx, alice, lb.ID).Extract()); got.Description != "the seed's" || got.UpdatedAt.IsZero() || got.UpdatedAt.Before(got.CreatedAt) {
		t.Fatalf("after an update: description %q, created %v, updated %v", got.Description, got.CreatedAt, got.UpdatedAt)
	}
	m1 := names[0]
	var memberID string
	for _, m := range must(pools.ExtractMembers(must(pools.ListMembers(alice, ports[80], pools.ListMembersOpts{Name: m1}).AllPages(ctx)))) {
		memberID = m.ID
	}
	must(pools.UpdateMember(ctx, alice, ports[80], memberID, pools.UpdateMemberOpts{Weight: ptr(5)}).Extract())
	var kp lbv1.Pool
	mustDo(l.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "80-pool"}, &kp))
	if w := kp.Spec.Members[0].Weight; w == nil || *w != 5 {
		t.Fatalf("member weight in the Pool object: %v", w)
	}

	// Errors as Octavia's.
	_, err = loadbalancers.Get(ctx, alice, "00000000-0000-0000-0000-000000000000").Extract()
	wantCode(t, err, http.StatusNotFound, "an unknown load balancer")
	_, err = listeners.Create(ctx, alice, listeners.CreateOpts{Protocol: listeners.ProtocolTCP, ProtocolPort: 80, LoadbalancerID: lb.ID}).Extract()
	wantCode(t, err, http.StatusConflict, "a second listener on port 80")
	_, err = pools.Create(ctx, alice, pools.CreateOpts{ListenerID: ls[0].ID, Protocol: pools.ProtocolHTTP, LBMethod: pools.LBMethodRoundRobin}).Extract()
	wantCode(t, err, http.StatusBadRequest, "an HTTP pool")
	_, err = loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{Name: "x", FlavorID: "gold"}).Extract()
	wantCode(t, err, http.StatusBadRequest, "a flavor")
	if !strings.Contains(fmt.Sprint(err), "flavor_id") {
		t.Fatalf("the refusal of a flavor does not name flavor_id: %v", err)
	}
	err = loadbalancers.Delete(ctx, alice, lb.ID, nil).ExtractErr()
	wantCode(t, err, http.StatusBadRequest, "deleting a load balancer with listeners, without cascade")

	// An object made with kubectl shows in the API.
	mustDo(l.k8s.Create(ctx, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "made-with-kubectl"},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb-test-1"}, Protocol: lbv1.ListenerUDP, ProtocolPort: 53}}))
	ls = must(listeners.ExtractListeners(must(listeners.List(alice, listeners.ListOpts{Name: "made-with-kubectl"}).AllPages(ctx))))
	if len(ls) != 1 || ls[0].Protocol != "UDP" || len(ls[0].Loadbalancers) != 1 || ls[0].Loadbalancers[0].ID != lb.ID {
		t.Fatalf("a Listener made with kubectl, in the API: %+v", ls)
	}

	// A fully populated load balancer in one call.
	full := must(loadbalancers.Create(ctx, alice, loadbalancers.CreateOpts{Name: "lb_full", VipAddress: "198.51.100.21",
		Listeners: []listeners.CreateOpts{{Name: "full_listener", Protocol: listeners.ProtocolTCP, ProtocolPort: 8080,
			DefaultPool: &pools.CreateOpts{Name: "full_pool", Protocol: pools.ProtocolTCP, LBMethod: pools.LBMethodLeastConnections,
				Members: []pools.CreateMemberOpts{{Name: "full_member", Address: "127.0.0.13", ProtocolPort: 8080}},
				Monitor: monitors.CreateOpts{Type: "TCP", Delay: 5, Timeout: 2, MaxRetries: 3}}}}}).Extract())
	tree := must(loadbalancers.GetStatuses(ctx, alice, full.ID).Extract())
	if len(tree.Loadbalancer.Listeners) != 1 || len(tree.Loadbalancer.Listeners[0].Pools) != 1 ||
		len(tree.Loadbalancer.Listeners[0].Pools[0].Members) != 1 {
		t.Fatalf("the fully populated tree: %+v", tree.Loadbalancer)
	}
	if fp := must(pools.Get(ctx, alice, tree.Loadbalancer.Listeners[0].Pools[0].ID).Extract()); fp.MonitorID == "" || fp.LBMethod != "LEAST_CONNECTIONS" {
		t.Fatalf("the fully populated pool: %+v", fp)
	}

	// Deletes: a member, the monitor, then the whole tree with cascade.
	mustDo(pools.DeleteMember(ctx, alice, ports[80], memberID).ExtractErr())
	mustDo(monitors.Delete(ctx, alice, hm.ID).ExtractErr())
	for _, id := range []string{lb.ID, full.ID} {
		mustDo(loadbalancers.Delete(ctx, alice, id, loadbalancers.DeleteOpts{Cascade: true}).ExtractErr())
	}
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		var lbs lbv1.LoadBalancerList
		var lss lbv1.ListenerList
		var ps lbv1.PoolList
		var hms lbv1.HealthMonitorList
		for _, list := range []client.ObjectList{&lbs, &lss, &ps, &hms} {
			mustDo(l.k8s.List(ctx, list, client.InNamespace(ns)))
		}
		if len(lbs.Items)+len(lss.Items)+len(ps.Items)+len(hms.Items) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("a minute after the cascade delete: %d load balancers, %d listeners, %d pools, %d monitors left",
				len(lbs.Items), len(lss.Items), len(ps.Items), len(hms.Items))
		}
	}
}

// TestProjectsAndRoles: neither project sees nor changes the other's load balancers; an
// observer reads but cannot write; an unknown or revoked token gets 401.
func TestProjectsAndRoles(t *testing.T) {
	defer catch(t)
	l := newLab(t)
	ctx := l.ctx
	lb := must(loadbalancers.Create(ctx, l.lb("alice"), loadbalancers.CreateOpts{Name: "alphas", VipAddress: "198.51.100.22"}).Extract())

	bob := l.lb("bob")
	got := must(loadbalancers.ExtractLoadBalancers(must(loadbalancers.List(bob, nil).AllPages(ctx))))
	if len(got) != 0 {
		t.Fatalf("project beta sees %d load balancers of alpha", len(got))
	}
	_, err := loadbalancers.Get(ctx, bob, lb.ID).Extract()
	// Octavia's policy answers another project's objects 403 (its tempest suite checks it).
	wantCode(t, err, http.StatusForbidden, "beta reading alpha's load balancer")
	err = loadbalancers.Delete(ctx, bob, lb.ID, nil).ExtractErr()
	wantCode(t, err, http.StatusForbidden, "beta deleting alpha's load balancer")
	_, err = listeners.Create(ctx, bob, listeners.CreateOpts{Protocol: listeners.ProtocolTCP, ProtocolPort: 80, LoadbalancerID: lb.ID}).Extract()
	wantCode(t, err, http.StatusForbidden, "beta adding a listener to alpha's load balancer")
	_, err = loadbalancers.Create(ctx, bob, loadbalancers.CreateOpts{Name: "sneaky", ProjectID: l.proj["alpha"]}).Extract()
	wantCode(t, err, http.StatusForbidden, "beta creating in alpha's project")

	// Keystone's own member role is not Octavia's: refused by Octavia's default policy, granted
	// with Keystone's default roles on (enforce_new_defaults).
	_, err = loadbalancers.List(l.lb("mia"), nil).AllPages(ctx)
	wantCode(t, err, http.StatusForbidden, "a Keystone member without Octavia's roles listing")
	l.api.KeystoneDefaultRoles = true
	must(loadbalancers.List(l.lb("mia"), nil).AllPages(ctx))
	l.api.KeystoneDefaultRoles = false

	olive := l.lb("olive")
	got = must(loadbalancers.ExtractLoadBalancers(must(loadbalancers.List(olive, nil).AllPages(ctx))))
	if len(got) != 1 || got[0].ID != lb.ID {
		t.Fatalf("alpha's observer sees %+v", got)
	}
	_, err = loadbalancers.Update(ctx, olive, lb.ID, loadbalancers.UpdateOpts{Description: ptr("x")}).Extract()
	wantCode(t, err, http.StatusForbidden, "an observer writing")

	// Writes are logged with who made them and the answer, refused ones too.
	if log := l.logs.String(); !strings.Contains(log, `method=POST path=/v2.0/lbaas/loadbalancers code=403`) || !strings.Contains(log, "project="+l.proj["beta"]) {
		t.Fatalf("beta's refused write is not in the API's log:\n%s", log)
	}

	// An administrator's ResourceQuota on the project's namespace is its Octavia quota.
	var alphaNS corev1.NamespaceList
	mustDo(l.k8s.List(ctx, &alphaNS, client.MatchingLabels{lbv1.ProjectLabel: l.proj["alpha"]}))
	// (No kube-controller-manager here: the test counts what the quota controller would.)
	count := corev1.ResourceList{"count/loadbalancers.lb.l4lb.io": resource.MustParse("1")}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: alphaNS.Items[0].Name, Name: "octavia"},
		Spec: corev1.ResourceQuotaSpec{Hard: count}}
	mustDo(l.k8s.Create(ctx, quota))
	quota.Status = corev1.ResourceQuotaStatus{Hard: count, Used: count}
	mustDo(l.k8s.Status().Update(ctx, quota))
	_, err = loadbalancers.Create(ctx, l.lb("alice"), loadbalancers.CreateOpts{Name: "one too many", VipAddress: "198.51.100.24"}).Extract()
	wantCode(t, err, http.StatusForbidden, "a create over the namespace's quota")
	if !strings.Contains(err.Error(), "Quota has been met") {
		t.Fatalf("the quota's 403 does not say so: %v", err)
	}

	// Tokens: none, unknown, revoked.
	token := l.users["alice"].Token()
	mustDo(tokens.Revoke(ctx, l.admin, token).Err)
	time.Sleep(1500 * time.Millisecond) // the server trusts a validation for a second here
	for what, tok := range map[string]string{"no token": "", "an unknown token": "gAAAAAnot-a-token", "a revoked token": token} {
		if code, _, answer := l.raw(http.MethodGet, "/v2/lbaas/loadbalancers", tok, nil); code != http.StatusUnauthorized {
			t.Fatalf("%s: HTTP %d: %s", what, code, answer)
		}
	}
	var nsList corev1.NamespaceList
	mustDo(l.k8s.List(ctx, &nsList, client.MatchingLabels{lbv1.ProjectLabel: l.proj["beta"]}))
	if len(nsList.Items) != 0 {
		t.Fatalf("beta's refused writes made a namespace: %v", nsList.Items)
	}
}

func ptr[T any](v T) *T { return &v }

// syncBuffer is a log the server writes from its handlers' goroutines and a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
