package e2e

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/services"
)

const serviceVIP = "198.51.100.201"

// answerers fetches url n times on new connections and counts the answers by pod.
func answerers(url string, n int) map[string]int {
	out := map[string]int{}
	for range n {
		if s, err := fetch(url); err == nil {
			host, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(s), "Server : "), " @ ")
			out[host]++
		}
	}
	return out
}

// TestServiceTypeLoadBalancer is what a Kubernetes user does: a Deployment exposed with
// kubectl as a Service of type LoadBalancer, served by l4lb installed as the cluster's
// load-balancer implementation (services.defaultClass=true), scaled under traffic, deleted.
func TestServiceTypeLoadBalancer(t *testing.T) {
	k := newCluster(t)
	k.images()
	k.install("--set", "services.defaultClass=true")
	ns := "shop"
	kubectl := func(args ...string) string {
		return run(t, []string{"KUBECONFIG=" + k.kubeconfig}, append([]string{"kubectl", "-n", ns}, args...)...)
	}
	must(t, k.c.Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	t.Cleanup(func() {
		k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		k.c.Delete(context.Background(), &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	// The administrator's part: addresses for the namespace.
	must(t, k.c.Create(k.ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{serviceVIP + "/32"}, Namespaces: []string{ns}}}))

	kubectl("create", "deployment", "echo", "--image="+seedImage, "--replicas=3", "--", "/seedapp", "-p", "8080", "-u", "9000")
	kubectl("patch", "deployment/echo", "--type=json", "-p",
		`[{"op":"add","path":"/spec/template/spec/containers/0/readinessProbe","value":{"httpGet":{"path":"/health","port":8080},"periodSeconds":1}},`+
			// As apps behind any load balancer do: keep serving a moment after being told to
			// stop, while the endpoint drains (the seed's app exits at once on SIGTERM).
			`{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"sleep":{"seconds":2}}}}]`)
	kubectl("rollout", "status", "deployment/echo", "--timeout=3m")
	pods := func() []string {
		var list corev1.PodList
		must(t, k.c.List(k.ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": "echo"}))
		var out []string
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				out = append(out, p.Name)
			}
		}
		slices.Sort(out)
		return out
	}

	start := time.Now()
	kubectl("expose", "deployment", "echo", "--type=LoadBalancer", "--port=80", "--target-port=8080")
	var svc corev1.Service
	for {
		must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: "echo"}, &svc))
		if in := svc.Status.LoadBalancer.Ingress; len(in) == 1 && in[0].IP == serviceVIP {
			break
		}
		if time.Since(start) > time.Minute {
			k.logs()
			t.Fatalf("no ingress address a minute after kubectl expose: %+v", svc.Status.LoadBalancer)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("kubectl expose -> ingress %s in %v", serviceVIP, time.Since(start).Round(time.Millisecond))
	if k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: services.LoadBalancerName("echo")}, &lbv1.LoadBalancer{}) != nil {
		t.Fatal("kubectl get l4lb does not show the Service's load balancer")
	}
	url := "http://" + serviceVIP + "/"
	// every waits until the answers come from exactly the Deployment's ready pods.
	every := func(what string) {
		t.Helper()
		began := time.Now()
		for {
			want := pods()
			got := answerers(url, 4*len(want))
			if slices.Equal(slices.Sorted(maps.Keys(got)), want) {
				t.Logf("%s: answers from all %d pods after %v: %v", what, len(want), time.Since(began).Round(time.Millisecond), got)
				return
			}
			if time.Since(began) > 90*time.Second {
				k.logs()
				t.Fatalf("%s: answers %v, want every pod of %v", what, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	every("3 replicas")

	// TCP and UDP on the same port number, one Service: both served.
	kubectl("patch", "service", "echo", "--type=json", "-p", `[{"op":"replace","path":"/spec/ports","value":[`+
		`{"name":"tcp","protocol":"TCP","port":80,"targetPort":8080},{"name":"udp","protocol":"UDP","port":80,"targetPort":9000}]}]`)
	udp := map[string]int{}
	for end := time.Now().Add(30 * time.Second); len(udp) < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			k.logs()
			t.Fatalf("UDP port 80 of the Service: answers %v, want all 3 pods", udp)
		}
		if s, err := askUDP(serviceVIP + ":80"); err == nil {
			host, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(s), "Server : "), " @ ")
			udp[host]++
		}
	}
	every("TCP beside UDP on port 80")

	// What Service users set. sessionAffinity ClientIP keeps this client on one pod;
	// loadBalancerSourceRanges refuses a client outside them.
	patch := func(p string) { kubectl("patch", "service", "echo", "-p", p) }
	until := func(what string, ok func(map[string]int) bool) {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; {
			got := answerers(url, 8)
			if ok(got) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: answers %v", what, got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	patch(`{"spec":{"sessionAffinity":"ClientIP"}}`)
	until("sessionAffinity ClientIP", func(got map[string]int) bool { return len(got) == 1 && slices.Collect(maps.Values(got))[0] == 8 })
	patch(`{"spec":{"sessionAffinity":"None"}}`)
	until("sessionAffinity None", func(got map[string]int) bool { return len(got) == 3 })
	patch(`{"spec":{"loadBalancerSourceRanges":["203.0.113.0/24"]}}`)
	until("a client outside loadBalancerSourceRanges", func(got map[string]int) bool { return len(got) == 0 })
	patch(`{"spec":{"loadBalancerSourceRanges":["198.51.100.0/24"]}}`)
	until("a client inside loadBalancerSourceRanges", func(got map[string]int) bool { return len(got) == 3 })
	// externalTrafficPolicy Local: held by the node running the pods (the EndpointSlices name
	// it), which sends to its own pods: here, every pod.
	patch(`{"spec":{"externalTrafficPolicy":"Local"}}`)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var lb lbv1.LoadBalancer
		must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: services.LoadBalancerName("echo")}, &lb))
		if lb.Spec.TrafficPolicy == lbv1.TrafficLocal {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("externalTrafficPolicy Local did not reach the load balancer: %+v", lb.Spec)
		}
	}
	until("externalTrafficPolicy Local", func(got map[string]int) bool { return len(got) == 3 })
	patch(`{"spec":{"externalTrafficPolicy":"Cluster"}}`)

	// Scaled up and down under traffic (a new connection every 20 ms): no connection refused
	// or failed, and the open connections to the pod that stays keep working.
	load := startTraffic(url)
	kubectl("scale", "deployment/echo", "--replicas=5")
	kubectl("rollout", "status", "deployment/echo", "--timeout=3m")
	every("scaled to 5")
	open := map[*httpConn]string{}
	for range 10 {
		h := dialHTTP(t, serviceVIP+":80")
		open[h] = h.pod(t, "before scaling down")
	}
	kubectl("scale", "deployment/echo", "--replicas=1")
	for len(pods()) != 1 {
		time.Sleep(100 * time.Millisecond)
	}
	every("scaled to 1")
	res := load.stop()
	if res.failed > 0 {
		k.logs()
		t.Fatalf("scaling 3 -> 5 -> 1: %d of %d connections failed: %v", res.failed, res.ok+res.failed+res.resent, res.errs)
	}
	t.Logf("scaling 3 -> 5 -> 1 under traffic: %d connections, none failed (%d resent SYNs)", res.ok+res.resent, res.resent)
	stays := pods()[0]
	kept := 0
	for h, pod := range open {
		if pod == stays {
			if got := h.pod(t, "after scaling down"); got != stays {
				t.Fatalf("an open connection to %s answered from %s", stays, got)
			}
			kept++
		}
		h.c.Close()
	}
	t.Logf("%d open connections to the pod that stayed carried on", kept)

	// Deleted: the garbage collector takes the objects, the controller releases the VIP.
	kubectl("delete", "service", "echo", "--wait")
	k.waitGone(ns)
	var ls lbv1.ListenerList
	must(t, k.c.List(k.ctx, &ls, client.InNamespace(ns)))
	if len(ls.Items) > 0 {
		t.Fatalf("%d listeners left after the Service was deleted", len(ls.Items))
	}
	for end := time.Now().Add(30 * time.Second); ; {
		addrs := run(t, nil, "ip", "-n", k.ns, "-o", "addr", "show")
		if _, err := fetch(url); err != nil && !strings.Contains(addrs, serviceVIP) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the VIP is still on the node or answering 30 s after the Service was deleted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.noForbidden()
}

// pod GETs / on the open connection and returns the pod that answered.
func (h *httpConn) pod(t *testing.T, what string) string {
	t.Helper()
	body := h.get(t, what)
	host, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(body), "Server : "), " @ ")
	if host == "" {
		t.Fatalf("%s: no pod named in %q", what, body)
	}
	return host
}
