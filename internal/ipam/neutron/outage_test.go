package neutron_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/ipam/neutron"
	"github.com/l4lb/l4lb/test/testenv"
)

// cli runs the user's openstack CLI against the local cloud.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("openstack", args...)
	cmd.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+cloudsFile(), "OS_CLOUD=l4lb-local")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openstack %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// runNamespace names a namespace of this run: the cloud may outlive a run (one started by
// hand is kept), and what an interrupted run left in it must not count in this one's tallies.
func runNamespace(name string) string { return fmt.Sprintf("%s-%d", name, os.Getpid()) }

// cloudCount counts, with the openstack CLI, the VIP ports and floating IPs of the load
// balancers of namespace ns: ports by their name, floating IPs by their description.
func cloudCount(t *testing.T, ns string) (int, int) {
	t.Helper()
	count := func(out, prefix string) int {
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, prefix) {
				n++
			}
		}
		return n
	}
	return count(cli(t, "port", "list", "-f", "value", "-c", "Name"), "l4lb-"+ns+"-"),
		count(cli(t, "floating", "ip", "list", "--long", "-f", "value", "-c", "Description"), "l4lb load balancer "+ns+"/")
}

// cloudTest starts an API server with the namespace ns and the credentials Secret.
func cloudTest(t *testing.T, ns string) (*testenv.Env, *corev1.Secret) {
	t.Helper()
	neutron.NeedCloud(t)
	ctrl.SetLogger(logr.Discard())
	env := testenv.ForTest(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "openstack-credentials"},
		Data: map[string][]byte{"clouds.yaml": neutron.CloudsYAML(), "cloud": []byte("l4lb-local")}}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, secret,
	} {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	return env, secret
}

// runController runs the controller (and an agent for node-1) until the returned stop is
// called, with the openstack provider unless without.
func runController(t *testing.T, env *testenv.Env, secret *corev1.Secret, clusterID string, without bool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	engine, err := env.Run(ctx, testenv.ControlPlane{AgentNode: "node-1", Providers: func(mgr ctrl.Manager) map[lbv1.Provider]ipam.Provider {
		ps := map[lbv1.Provider]ipam.Provider{lbv1.ProviderStatic: ipam.NewStatic(nil, mgr.GetClient())}
		if !without {
			ps[lbv1.ProviderOpenStack] = neutron.New(mgr, client.ObjectKeyFromObject(secret), "openstack", clusterID)
		}
		return ps
	}})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); engine.Close() }) }
	t.Cleanup(stop)
	return stop
}

func openstackLB(ns, name string) *lbv1.LoadBalancer {
	return &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderOpenStack, VIP: &lbv1.VIP{Subnet: "private-subnet"},
			FloatingIP: &lbv1.FloatingIP{Network: "public-net"}}}
}

// waitFor polls until every load balancer of ns passes check.
func waitFor(t *testing.T, k8s client.Client, ns, what string, limit time.Duration, check func(*lbv1.LoadBalancer) error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var list lbv1.LoadBalancerList
		err := k8s.List(context.Background(), &list, client.InNamespace(ns))
		for i := range list.Items {
			if err == nil {
				err = check(&list.Items[i])
			}
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func activeWithFloatingIP(lb *lbv1.LoadBalancer) error {
	if lb.Status.ProvisioningStatus != lbv1.ProvisioningActive || lb.Status.FloatingIPAddress == "" ||
		!meta.IsStatusConditionTrue(lb.Status.Conditions, lbv1.ConditionSynced) {
		return fmt.Errorf("%s: %s, floating IP %q, conditions %+v", lb.Name, lb.Status.ProvisioningStatus, lb.Status.FloatingIPAddress, lb.Status.Conditions)
	}
	return nil
}

// touch changes every load balancer's spec, so each must sync with the cloud again.
func touch(t *testing.T, k8s client.Client, ns, description string) {
	t.Helper()
	var list lbv1.LoadBalancerList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, lb := range list.Items {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(&lb), &lb); err != nil {
				return err
			}
			lb.Spec.Description = description
			return k8s.Update(context.Background(), &lb)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// watchStatus records every moment a load balancer of ns shows less than it had: no VIP, no
// floating IP, or neither ACTIVE nor PENDING_UPDATE (which a spec change shows until the
// dataplane serves the new generation).
func watchStatus(k8s client.Client, ns string) (stop func() []string) {
	done := make(chan struct{})
	var lost []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var list lbv1.LoadBalancerList
			if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
				continue
			}
			for _, lb := range list.Items {
				s := lb.Status
				if s.VIPAddress == "" || s.VIPPortID == "" || s.FloatingIPAddress == "" || s.FloatingIPID == "" ||
					(s.ProvisioningStatus != lbv1.ProvisioningActive && s.ProvisioningStatus != lbv1.ProvisioningPendingUpdate) {
					lost = append(lost, fmt.Sprintf("%s %s: vip %q port %q fip %q", lb.Name, s.ProvisioningStatus, s.VIPAddress, s.VIPPortID, s.FloatingIPAddress))
				}
			}
		}
	}()
	return func() []string { close(done); wg.Wait(); return lost }
}

// neutronAnswering500 stands in Neutron's place on its port, answering every request with 500.
func neutronAnswering500(t *testing.T) (stop func()) {
	t.Helper()
	neutron.OpenstackScript(t, "stop-neutron")
	ln, err := net.Listen("tcp", "127.0.0.1:19696")
	if err != nil {
		neutron.OpenstackScript(t, "start-neutron")
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"NeutronError": {"type": "HTTPInternalServerError", "message": "injected"}}`, http.StatusInternalServerError)
	})}
	go srv.Serve(ln)
	return func() { srv.Close(); neutron.OpenstackScript(t, "start-neutron") }
}

// TestCloudOutagesKeepEveryLoadBalancer: with Neutron stopped, Keystone stopped (the
// controller restarted meanwhile, so it must authenticate again), and Neutron answering 500,
// each for 15 s while every load balancer's spec changes, every load balancer keeps its VIP
// and floating IP in status and stays ACTIVE throughout; Synced names the failure and comes
// back; the cloud holds as many ports and floating IPs after as before.
func TestCloudOutagesKeepEveryLoadBalancer(t *testing.T) {
	ns := runNamespace("outage")
	env, secret := cloudTest(t, ns)
	k8s := env.Client
	stop := runController(t, env, secret, "test-outage", false)
	for i := range 3 {
		if err := k8s.Create(context.Background(), openstackLB(ns, fmt.Sprintf("lb-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, k8s, ns, "ACTIVE with a floating IP", 90*time.Second, activeWithFloatingIP)
	ports0, fips0 := cloudCount(t, ns)
	if ports0 != 3 || fips0 != 3 {
		t.Fatalf("%d ports and %d floating IPs for 3 load balancers", ports0, fips0)
	}

	lost := watchStatus(k8s, ns)
	faults := []struct {
		name       string
		begin, end func()
		reason     string
	}{
		{"Neutron stopped", func() { neutron.OpenstackScript(t, "stop-neutron") }, func() { neutron.OpenstackScript(t, "start-neutron") }, lbv1.ReasonProviderUnavailable},
		{"Keystone stopped, the controller restarted", func() {
			neutron.OpenstackScript(t, "stop-keystone")
			stop()
			stop = runController(t, env, secret, "test-outage", false)
		}, func() { neutron.OpenstackScript(t, "start-keystone") }, lbv1.ReasonProviderUnavailable},
		{"Neutron answering 500", nil, nil, lbv1.ReasonProviderUnavailable},
	}
	for i, f := range faults {
		if f.begin == nil {
			end := neutronAnswering500(t)
			f.end = end
		} else {
			f.begin()
		}
		began := time.Now()
		touch(t, k8s, ns, fmt.Sprintf("fault %d", i))
		waitFor(t, k8s, ns, f.name+": Synced names the failure", 15*time.Second, func(lb *lbv1.LoadBalancer) error {
			c := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionSynced)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != f.reason || c.ObservedGeneration != lb.Generation {
				return fmt.Errorf("%s: Synced %+v", lb.Name, c)
			}
			return nil
		})
		time.Sleep(15*time.Second - time.Since(began))
		f.end()
		waitFor(t, k8s, ns, f.name+": clean again", 3*time.Minute, activeWithFloatingIP)
	}
	if l := lost(); len(l) > 0 {
		t.Fatalf("load balancers lost what they had %d times, first: %s", len(l), l[0])
	}
	if p, f := cloudCount(t, ns); p != ports0 || f != fips0 {
		t.Fatalf("after the outages: %d ports and %d floating IPs, before %d and %d", p, f, ports0, fips0)
	}

	// Deleting them all leaves nothing in the cloud.
	if err := k8s.DeleteAllOf(context.Background(), &lbv1.LoadBalancer{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, k8s, ns)
	if p, f := cloudCount(t, ns); p != 0 || f != 0 {
		t.Fatalf("%d ports and %d floating IPs left", p, f)
	}
}

func waitGone(t *testing.T, k8s client.Client, ns string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var list lbv1.LoadBalancerList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err == nil && len(list.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			names := []string{}
			for _, lb := range list.Items {
				names = append(names, fmt.Sprintf("%s %+v", lb.Name, lb.Status.Conditions))
			}
			slices.Sort(names)
			t.Fatalf("load balancers left: %v", names)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDeletionWithoutTheProviderKeepsTheFinalizer: a controller that does not run the
// provider a load balancer was made with cannot release its port and floating IP, so the
// object stays, saying why, until a controller that can releases them.
func TestDeletionWithoutTheProviderKeepsTheFinalizer(t *testing.T) {
	ns := runNamespace("noprovider")
	env, secret := cloudTest(t, ns)
	k8s := env.Client
	stop := runController(t, env, secret, "test-noprovider", false)
	lb := openstackLB(ns, "lb")
	if err := k8s.Create(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k8s, ns, "ACTIVE with a floating IP", 90*time.Second, activeWithFloatingIP)
	stop()

	stop = runController(t, env, secret, "test-noprovider", true)
	if err := k8s.Delete(context.Background(), lb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k8s, ns, "the finalizer stays and Synced says why", 30*time.Second, func(lb *lbv1.LoadBalancer) error {
		c := meta.FindStatusCondition(lb.Status.Conditions, lbv1.ConditionSynced)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != lbv1.ReasonProviderUnavailable || !strings.Contains(c.Message, "not configured") {
			return fmt.Errorf("Synced %+v", c)
		}
		if lb.Status.VIPPortID == "" || lb.Status.FloatingIPID == "" {
			return fmt.Errorf("status lost what exists: %+v", lb.Status)
		}
		return nil
	})
	if p, f := cloudCount(t, ns); p != 1 || f != 1 {
		t.Fatalf("%d ports and %d floating IPs while deleting, want what exists: 1 and 1", p, f)
	}
	stop()

	runController(t, env, secret, "test-noprovider", false)
	waitGone(t, k8s, ns)
	if p, f := cloudCount(t, ns); p != 0 || f != 0 {
		t.Fatalf("%d ports and %d floating IPs left", p, f)
	}
}
