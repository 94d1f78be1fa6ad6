package config

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/manager"
	"github.com/l4lb/l4lb/internal/ssa"
	"github.com/l4lb/l4lb/test/testenv"
)

// install applies every document for real, as kubectl apply -k does.
func install(t *testing.T, manifests []byte) {
	t.Helper()
	for _, u := range documents(t, manifests) {
		if err := env.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("test"), client.ForceOwnership); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// aggregate does what kube-controller-manager's clusterrole-aggregation controller does (the
// test's API server runs without one): it fills each aggregated ClusterRole (admin, edit,
// view) with the rules of the ClusterRoles its selectors match, by their labels.
func aggregate(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var all rbacv1.ClusterRoleList
	if err := env.Client.List(ctx, &all); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "edit", "view"} {
		var role rbacv1.ClusterRole
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &role); err != nil {
			t.Fatal(err)
		}
		var rules []rbacv1.PolicyRule
		for _, sel := range role.AggregationRule.ClusterRoleSelectors {
			s, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range all.Items {
				if r.Name != name && s.Matches(labels.Set(r.Labels)) {
					rules = append(rules, r.Rules...)
				}
			}
		}
		role.Rules = rules
		if err := env.Client.Update(ctx, &role); err != nil {
			t.Fatal(err)
		}
	}
}

// as is a client that acts as user, impersonated through the admin's connection.
func as(t *testing.T, user string, groups ...string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	c, err := client.New(cfg, client.Options{Scheme: manager.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serviceAccount(t *testing.T, name string) client.Client {
	return as(t, "system:serviceaccount:l4lb-system:"+name, "system:serviceaccounts", "system:serviceaccounts:l4lb-system")
}

// TestEachIdentityMayDoWhatItNeedsAndNothingMore installs config/default's RBAC and admission
// policies for real, then acts as the controller's and the dataplane's service accounts, a
// tenant with edit in their namespace, a viewer and an address administrator, asserting each
// thing they may do and each they may not.
func TestEachIdentityMayDoWhatItNeedsAndNothingMore(t *testing.T) {
	install(t, run(t, "kubectl", "kustomize", "config/default"))
	aggregate(t)
	ctx := context.Background()
	admin := env.Client
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "openstack-credentials"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "another-secret"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "alice-edit"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "alice"}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "bob-view"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "bob"}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "carol-addresses"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "l4lb-address-admin"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "carol"}}},
	} {
		if err := admin.Create(ctx, o); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	lbOf := func(ns, name string) *lbv1.LoadBalancer {
		return &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic}}
	}
	existing := lbOf("team-a", "existing")
	if err := admin.Create(ctx, existing); err != nil {
		t.Fatal(err)
	}
	// The controller's part of its status, as the controller writes it.
	if err := ssa.ApplyStatus(ctx, admin, "LoadBalancer", "team-a", "existing", ssa.ControllerManager,
		lbv1.LoadBalancerStatus{VIPAddress: "198.51.100.1", CommonStatus: lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningActive}}); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(existing)
	fresh := func(c client.Client) *lbv1.LoadBalancer {
		var lb lbv1.LoadBalancer
		if err := admin.Get(ctx, key, &lb); err != nil {
			t.Fatal(err)
		}
		return &lb
	}
	cond := func(typ string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: "Test", LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second))}
	}
	manager, dataplane := serviceAccount(t, "l4lb-controller"), serviceAccount(t, "l4lb-dataplane")
	alice, bob, carol := as(t, "alice"), as(t, "bob"), as(t, "carol")
	pool := &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{"198.51.100.0/24"}}}

	cases := []struct {
		who     string
		what    string
		allowed bool
		do      func() error
	}{
		{"controller", "lists load balancers in every namespace", true, func() error { return manager.List(ctx, &lbv1.LoadBalancerList{}) }},
		{"controller", "writes a load balancer's VIP in status", true, func() error {
			return ssa.ApplyStatus(ctx, manager, "LoadBalancer", "team-a", "existing", ssa.ControllerManager,
				lbv1.LoadBalancerStatus{VIPAddress: "198.51.100.2", CommonStatus: lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningActive}})
		}},
		{"controller", "adds its finalizer", true, func() error {
			lb := fresh(manager)
			lb.Finalizers = append(lb.Finalizers, lbv1.Finalizer)
			return manager.Update(ctx, lb)
		}},
		{"controller", "changes a load balancer's spec", false, func() error {
			lb := fresh(manager)
			lb.Spec.Description = "changed by the controller"
			return manager.Update(ctx, lb)
		}},
		{"controller", "changes a listener", false, func() error {
			return manager.Create(ctx, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "x"},
				Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "existing"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}})
		}},
		{"controller", "creates a listener for a Service it serves", true, func() error {
			l := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "svc-web-tcp-80",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web", UID: "1", Controller: ptr.To(true)}}},
				Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "svc-web"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}}
			if err := manager.Create(ctx, l); err != nil {
				return err
			}
			return manager.Delete(ctx, l)
		}},
		{"controller", "takes a tenant's load balancer for a Service", false, func() error {
			lb := fresh(manager)
			lb.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web", UID: "1", Controller: ptr.To(true)}}
			lb.Spec.Description = "changed by the controller"
			return manager.Update(ctx, lb)
		}},
		{"controller", "deletes a tenant's load balancer", false, func() error { return manager.Delete(ctx, fresh(manager)) }},
		{"controller", "lists Services and EndpointSlices", true, func() error {
			if err := manager.List(ctx, &corev1.ServiceList{}); err != nil {
				return err
			}
			return manager.List(ctx, &discoveryv1.EndpointSliceList{})
		}},
		{"controller", "changes a Service's spec", false, func() error {
			return manager.Patch(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web"}},
				client.RawPatch(types.MergePatchType, []byte(`{"spec":{"type":"ClusterIP"}}`)))
		}},
		{"controller", "lists Gateways and their routes", true, func() error {
			for _, l := range []client.ObjectList{&gatewayv1.GatewayList{}, &gatewayv1.TCPRouteList{}, &gatewayv1.UDPRouteList{}, &gatewayv1.ReferenceGrantList{}} {
				if err := manager.List(ctx, l); err != nil {
					return err
				}
			}
			return nil
		}},
		{"controller", "changes a Gateway's spec", false, func() error {
			return manager.Patch(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "edge"}},
				client.RawPatch(types.MergePatchType, []byte(`{"spec":{"gatewayClassName":"other"}}`)))
		}},
		{"controller", "creates a pool for a Gateway it serves", true, func() error {
			p := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "gw-edge-tcp",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: "edge", UID: "2", Controller: ptr.To(true)}}},
				Spec: lbv1.PoolSpec{LoadBalancerRef: &lbv1.ObjectReference{Name: "gw-edge"}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin}}
			if err := manager.Create(ctx, p); err != nil {
				return err
			}
			return manager.Delete(ctx, p)
		}},
		{"controller", "reads its credentials Secret", true, func() error {
			return manager.Get(ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "openstack-credentials"}, &corev1.Secret{})
		}},
		{"controller", "reads another Secret", false, func() error {
			return manager.Get(ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "another-secret"}, &corev1.Secret{})
		}},
		{"controller", "lists Secrets", false, func() error { return manager.List(ctx, &corev1.SecretList{}, client.InNamespace("l4lb-system")) }},
		{"controller", "reads VIP pools", true, func() error { return manager.List(ctx, &lbv1.VIPPoolList{}) }},
		{"controller", "creates a VIP pool", false, func() error { return manager.Create(ctx, pool.DeepCopy()) }},

		{"dataplane", "lists load balancers", true, func() error { return dataplane.List(ctx, &lbv1.LoadBalancerList{}) }},
		{"dataplane", "writes the holder and Programmed", true, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "existing", ssa.DataplaneManager,
				lbv1.LoadBalancerStatus{Holder: "node-1", CommonStatus: lbv1.CommonStatus{Conditions: []metav1.Condition{cond(lbv1.ConditionProgrammed)}}})
		}},
		{"dataplane", "reports what it serves of the tree", true, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "existing", ssa.DataplaneManager,
				lbv1.LoadBalancerStatus{Holder: "node-1", Served: &lbv1.ServedTree{Listeners: []lbv1.Served{{Name: "l", UID: "1", Generation: 1, Reason: lbv1.ReasonProgrammed}}}})
		}},
		{"dataplane", "writes a listener's status (the controller does, from the report)", false, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "Listener", "team-a", "x", ssa.DataplaneManager,
				lbv1.ListenerStatus{CommonStatus: lbv1.CommonStatus{Conditions: []metav1.Condition{cond(lbv1.ConditionProgrammed)}}})
		}},
		{"dataplane", "moves a VIP in status", false, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "existing", ssa.DataplaneManager,
				lbv1.LoadBalancerStatus{VIPAddress: "198.51.100.66", Holder: "node-1"})
		}},
		{"dataplane", "marks a load balancer ACTIVE", false, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "existing", ssa.DataplaneManager,
				lbv1.LoadBalancerStatus{CommonStatus: lbv1.CommonStatus{ProvisioningStatus: lbv1.ProvisioningError}})
		}},
		{"dataplane", "writes the controller's Ready condition", false, func() error {
			return ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "existing", ssa.DataplaneManager,
				lbv1.LoadBalancerStatus{CommonStatus: lbv1.CommonStatus{Conditions: []metav1.Condition{cond(lbv1.ConditionReady)}}})
		}},
		{"dataplane", "changes a spec", false, func() error {
			lb := fresh(dataplane)
			lb.Spec.Description = "changed by a node"
			return dataplane.Update(ctx, lb)
		}},
		{"dataplane", "reads Secrets", false, func() error {
			return dataplane.Get(ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "openstack-credentials"}, &corev1.Secret{})
		}},
		{"dataplane", "creates an address policy", false, func() error {
			return dataplane.Create(ctx, &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"0.0.0.0/0"}}})
		}},

		{"tenant with edit", "creates a load balancer in their namespace", true, func() error { return alice.Create(ctx, lbOf("team-a", "mine")) }},
		{"tenant with edit", "deletes it", true, func() error { return alice.Delete(ctx, lbOf("team-a", "mine")) }},
		{"tenant with edit", "creates a load balancer in another namespace", false, func() error { return alice.Create(ctx, lbOf("team-b", "theirs")) }},
		{"tenant with edit", "writes status", false, func() error {
			return ssa.ApplyStatus(ctx, alice, "LoadBalancer", "team-a", "existing", "alice", lbv1.LoadBalancerStatus{VIPAddress: "198.51.100.9"})
		}},
		{"tenant with edit", "creates a VIP pool", false, func() error { return alice.Create(ctx, pool.DeepCopy()) }},
		{"tenant with edit", "creates an address policy", false, func() error {
			return alice.Create(ctx, &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"127.0.0.0/8"}}})
		}},
		{"viewer", "reads load balancers", true, func() error { return bob.Get(ctx, key, &lbv1.LoadBalancer{}) }},
		{"viewer", "creates one", false, func() error { return bob.Create(ctx, lbOf("team-a", "bobs")) }},
		{"address administrator", "creates a VIP pool", true, func() error { return carol.Create(ctx, pool.DeepCopy()) }},
	}
	// The API server's authorizer learns new roles from its informers: wait until it knows them.
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range []client.Client{manager, dataplane, alice, bob} {
		for c.List(ctx, &lbv1.LoadBalancerList{}, client.InNamespace("team-a")) != nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for carol.List(ctx, &lbv1.VIPPoolList{}) != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// So does its ValidatingAdmissionPolicy plugin: wait until a policy refuses a write, on an
	// object of its own (a run once saw every policy still unenforced here).
	if err := admin.Create(ctx, lbOf("team-a", "policy-probe")); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		err := ssa.ApplyStatus(ctx, dataplane, "LoadBalancer", "team-a", "policy-probe", ssa.DataplaneManager,
			lbv1.LoadBalancerStatus{CommonStatus: lbv1.CommonStatus{Conditions: []metav1.Condition{cond(lbv1.ConditionReady)}}})
		if apierrors.IsForbidden(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range cases {
		err := tc.do()
		switch {
		case tc.allowed && err != nil && !apierrors.IsNotFound(err):
			t.Errorf("%s %s: refused: %v", tc.who, tc.what, err)
		case !tc.allowed && !apierrors.IsForbidden(err):
			t.Errorf("%s %s: want forbidden, got %v", tc.who, tc.what, err)
		}
	}
	// The writes refused above changed nothing.
	if lb := fresh(admin); lb.Status.VIPAddress != "198.51.100.2" || lb.Spec.Description != "" || lb.Status.ProvisioningStatus != lbv1.ProvisioningActive {
		t.Fatalf("a refused write landed: %+v", lb)
	}
}

// podsOf returns the pod templates of the Deployments and DaemonSets in manifests, by kind.
func podsOf(t *testing.T, manifests []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, u := range documents(t, manifests) {
		if k := u.GetKind(); k == "Deployment" || k == "DaemonSet" {
			tmpl, _, _ := unstructured.NestedMap(u.Object, "spec", "template")
			out[k] = tmpl
		}
	}
	return out
}

// TestPodsPassTheirPodSecurityLevels: the API server's Pod Security admission, enforcing,
// admits the controller's pod at the restricted level and the dataplane's only at privileged
// (it refuses it at baseline: host network and NET_ADMIN), from the chart as from kustomize.
func TestPodsPassTheirPodSecurityLevels(t *testing.T) {
	ctx := context.Background()
	for _, level := range []string{"restricted", "baseline", "privileged"} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-" + level,
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": level}}}
		if err := env.Client.Create(ctx, ns); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	helm := filepath.Join(testenv.Root(), "bin", "helm")
	sources := map[string][]byte{
		"chart":     run(t, helm, "template", "l4lb", "charts/l4lb", "--namespace", "l4lb"),
		"kustomize": run(t, "kubectl", "kustomize", "config/default"),
	}
	want := map[string]map[string]bool{ // kind -> level -> admitted
		"Deployment": {"restricted": true, "baseline": true, "privileged": true},
		"DaemonSet":  {"restricted": false, "baseline": false, "privileged": true},
	}
	for source, manifests := range sources {
		pods := podsOf(t, manifests)
		for kind, levels := range want {
			tmpl, ok := pods[kind]
			if !ok {
				t.Fatalf("%s: no %s", source, kind)
			}
			for level, admitted := range levels {
				pod := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod", "spec": tmpl["spec"]}}
				pod.SetNamespace("psa-" + level)
				pod.SetName("probe")
				err := env.Client.Create(ctx, pod, client.DryRunAll)
				switch {
				case admitted && err != nil:
					t.Errorf("%s %s at %s: refused: %v", source, kind, level, err)
				case !admitted && !apierrors.IsForbidden(err):
					t.Errorf("%s %s at %s: want refused by Pod Security, got %v", source, kind, level, err)
				}
			}
		}
	}
	if ns := run(t, "kubectl", "kustomize", "config/default"); !bytes.Contains(ns, []byte("pod-security.kubernetes.io/enforce: privileged")) {
		t.Fatal("the kustomize namespace carries no Pod Security label")
	}
}

// TestMetricsNeedAToken runs the l4lb binary's controller with its default metrics flags but
// the address: without a token the metrics answer 401, with a token of an account that may not
// read them 403, and with one bound to l4lb-metrics-reader the metrics.
func TestMetricsNeedAToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := testenv.Binary(dir)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := env.KubeconfigFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "controller", "--metrics-bind-address", addr, "--health-probe-bind-address", "0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	// Two accounts with tokens: one bound to the metrics reader role, one not.
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	roles, err := os.ReadFile(filepath.Join(testenv.Root(), "config", "rbac", "user_roles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	install(t, roles)
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: name}}
		if err := env.Client.Create(ctx, sa); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
		tr := &authenticationv1.TokenRequest{}
		if err := env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	reader, other := token("prometheus"), token("someone")
	if err := env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "l4lb-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "monitoring", Name: "prometheus"}}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	// Self-signed: the scrape trusts the server as Prometheus does with insecure_skip_verify.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
	scrape := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := scrape(reader)
		if code == http.StatusOK && bytes.Contains([]byte(body), []byte("controller_runtime_")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics reader got %d: %.200s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := scrape(""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
	if code, _ := scrape(other); code != http.StatusForbidden {
		t.Errorf("with a token not allowed to read metrics: %d, want 403", code)
	}
	// A token the API server cannot review is refused too (controller-runtime's filter
	// answers 500 when the review itself fails).
	if code, _ := scrape("not-a-token"); code == http.StatusOK {
		t.Errorf("with a bad token: %d", code)
	}
}
