package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/gateway"
	"github.com/l4lb/l4lb/test/testenv"
)

const gatewayVIP = "198.51.100.202"

// gatewayAPI installs the Gateway API's standard CRDs (go.mod's version) on the cluster, as its
// administrator would: they are the cluster's, the chart installs none.
func (k *cluster) gatewayAPI() {
	dir, err := testenv.GatewayAPICRDs()
	must(k.t, err)
	run(k.t, []string{"KUBECONFIG=" + k.kubeconfig}, "kubectl", "apply", "--server-side", "-f", dir)
	run(k.t, []string{"KUBECONFIG=" + k.kubeconfig}, "kubectl", "wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io",
		"crd/tcproutes.gateway.networking.k8s.io", "crd/udproutes.gateway.networking.k8s.io", "--timeout=60s")
}

// TestGatewayAPI: a Gateway with a TCP and a UDP listener, a TCPRoute and a UDPRoute to a
// Service of two pods, on the real cluster with the chart's defaults.
func TestGatewayAPI(t *testing.T) {
	k := newCluster(t)
	k.images()
	k.gatewayAPI()
	k.install()
	ns := "gw-e2e"
	kubectl := func(args ...string) string {
		return run(t, []string{"KUBECONFIG=" + k.kubeconfig}, append([]string{"kubectl", "-n", ns}, args...)...)
	}
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "l4lb"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}
	must(t, k.c.Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, k.c.Create(k.ctx, class))
	t.Cleanup(func() {
		k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		k.c.Delete(context.Background(), &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		k.c.Delete(context.Background(), class)
	})
	must(t, k.c.Create(k.ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{gatewayVIP + "/32"}, Namespaces: []string{ns}}}))
	kubectl("create", "deployment", "echo", "--image="+seedImage, "--replicas=2", "--", "/seedapp", "-p", "8080", "-u", "9000")
	kubectl("rollout", "status", "deployment/echo", "--timeout=3m")
	must(t, k.c.Create(k.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "echo"},
		Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080},
			{Name: "echo", Protocol: corev1.ProtocolUDP, Port: 9000}}}}))

	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "l4lb",
		Listeners: []gatewayv1.Listener{
			{Name: "web", Protocol: gatewayv1.TCPProtocolType, Port: 80},
			{Name: "echo", Protocol: gatewayv1.UDPProtocolType, Port: 9000},
		}}}
	ref := func(section string, port int32) ([]gatewayv1.ParentReference, []gatewayv1.BackendRef) {
		return []gatewayv1.ParentReference{{Name: "edge", SectionName: ptr.To(gatewayv1.SectionName(section))}},
			[]gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: ptr.To(gatewayv1.PortNumber(port))}}}
	}
	tp, tb := ref("web", 8080)
	up, ub := ref("echo", 9000)
	must(t, k.c.Create(k.ctx, gw))
	must(t, k.c.Create(k.ctx, &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: gatewayv1.TCPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: tp}, Rules: []gatewayv1.TCPRouteRule{{BackendRefs: tb}}}}))
	must(t, k.c.Create(k.ctx, &gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec: gatewayv1.UDPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: up}, Rules: []gatewayv1.UDPRouteRule{{BackendRefs: ub}}}}))

	start := time.Now()
	for {
		must(t, k.c.Get(k.ctx, client.ObjectKeyFromObject(gw), gw))
		if meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") && len(gw.Status.Addresses) == 1 && gw.Status.Addresses[0].Value == gatewayVIP {
			break
		}
		if time.Since(start) > time.Minute {
			k.logs()
			t.Fatalf("the Gateway is not programmed at %s a minute on: %+v", gatewayVIP, gw.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("Gateway programmed at %s in %v", gatewayVIP, time.Since(start).Round(time.Millisecond))

	// TCP through the TCPRoute, UDP through the UDPRoute: both pods answer each.
	for _, proto := range []string{"tcp", "udp"} {
		seen := map[string]int{}
		for end := time.Now().Add(60 * time.Second); len(seen) < 2; {
			if time.Now().After(end) {
				k.logs()
				t.Fatalf("%s through the Gateway: answers %v in 60 s, want both pods", proto, seen)
			}
			var s string
			var err error
			if proto == "tcp" {
				s, err = fetch("http://" + gatewayVIP + "/")
			} else {
				s, err = askUDP(gatewayVIP + ":9000")
			}
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			host, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(s), "Server : "), " @ ")
			seen[host]++
		}
		t.Logf("%s through the Gateway: %v", proto, seen)
	}

	// Deleted: the garbage collector takes the load balancer, the VIP goes.
	must(t, k.c.Delete(k.ctx, gw))
	k.waitGone(ns)
	for end := time.Now().Add(30 * time.Second); ; {
		if _, err := fetch("http://" + gatewayVIP + "/"); err != nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the Gateway's address still answers 30 s after it was deleted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.noForbidden()
}
