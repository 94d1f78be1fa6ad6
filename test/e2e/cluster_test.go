// Package e2e runs l4lb as users install it: the image built here, the chart installed with
// Helm on a real cluster (hack/cluster.sh: kubelet, containerd, kube-proxy), the seed's
// walkthrough through the pods, and the uninstall. hack/test.sh brings the cluster up and
// down around it.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/manager"
	"github.com/l4lb/l4lb/test/testenv"
)

const (
	vip       = "198.51.100.200"
	imageName = "l4lb.local/l4lb:e2e"
	seedImage = "l4lb.local/seedapp:e2e"
)

type cluster struct {
	t          *testing.T
	kubeconfig string
	ns         string // the cluster's network namespace
	c          client.Client
	cs         *kubernetes.Clientset
	ctx        context.Context
	dir        string
}

func run(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = testenv.Root()
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newCluster(t *testing.T) *cluster {
	ctrl.SetLogger(logr.Discard())
	kc := os.Getenv("L4LB_CLUSTER_KUBECONFIG")
	if kc == "" {
		t.Skip("no cluster: hack/test.sh starts one (hack/cluster.sh up) and sets L4LB_CLUSTER_KUBECONFIG")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &cluster{t: t, kubeconfig: kc, ns: os.Getenv("L4LB_CLUSTER_NS"), c: c, cs: kubernetes.NewForConfigOrDie(cfg), ctx: ctx, dir: t.TempDir()}
}

// image packs a static build of the command at pkg into an image and loads it on the node.
func (k *cluster) image(pkg, path, user, tag string) {
	bin := filepath.Join(k.dir, filepath.Base(path))
	run(k.t, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	tar := bin + ".tar"
	run(k.t, nil, "go", "run", "./hack/image", "-binary", bin, "-path", path, "-user", user, "-tag", tag, "-o", tar)
	run(k.t, nil, "hack/cluster.sh", "load", tar)
}

var loaded sync.Once

// images builds and loads l4lb's image and the seed app's, once.
func (k *cluster) images() {
	loaded.Do(func() {
		k.image(".", "/l4lb", "65532:65532", imageName)
		k.image("./hack/seedapp", "/seedapp", "65532:65532", seedImage)
	})
}

func (k *cluster) helm(args ...string) string {
	return run(k.t, []string{"KUBECONFIG=" + k.kubeconfig}, append([]string{filepath.Join(testenv.Root(), "bin", "helm")}, args...)...)
}

// fetch GETs url from this machine (it reaches the cluster's LAN through the veth), on a new
// connection each time, as the seed's curl does.
func fetch(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	r, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

// askUDP sends one datagram from a new socket (a new flow) and returns the answer.
func askUDP(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	b := make([]byte, 512)
	n, err := c.Read(b)
	return strings.TrimSpace(string(b[:n])), err
}

// TestHelmInstallSeedAndUninstall installs the chart with the image built here, runs the seed's
// walkthrough through the pods (two members as pods of the seed's app, listeners on 80 and
// 443, round robin, an HTTP monitor on /health) from a client outside the cluster, and a UDP
// listener; checks that kstatus says Current for everything, that no l4lb pod was refused
// anything by RBAC, that deleting the leading controller's pod flaps no status and that a
// deleted dataplane pod is replaced and serves again; then uninstalls: no VIP, no Lease, no
// nftables table left behind.
func TestHelmInstallSeedAndUninstall(t *testing.T) {
	k := newCluster(t)
	k.images()

	k.install()

	// The seed's back-ends, as pods.
	app := "seed"
	must(t, k.c.Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app}}))
	t.Cleanup(func() { // what the test made, for the next test on this cluster
		k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app}})
		k.c.Delete(context.Background(), &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}})
		k.c.Delete(context.Background(), &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pods"}})
	})
	var ips []string
	for _, name := range []string{"backend-1", "backend-2"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: seedImage, ImagePullPolicy: corev1.PullNever,
				Args:           []string{"-p", "8080", "-u", "9000"},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt(8080)}}}}}}}
		must(t, k.c.Create(k.ctx, pod))
		ips = append(ips, k.waitPodIP(app, name))
	}
	flask := k.flaskHost()
	must(t, k.c.Create(k.ctx, &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{vip + "/32"}, Namespaces: []string{app}}}))
	// Members are pods: the pod range is refused unless an administrator allows it.
	must(t, k.c.Create(k.ctx, &lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec: lbv1.AddressPolicySpec{Allow: []string{"10.244.0.0/24"}}}))
	must(t, k.c.Create(k.ctx, &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "lb-test-1"},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic, VIP: &lbv1.VIP{Address: vip}}}))
	for _, port := range []int32{80, 443} {
		l := fmt.Sprintf("listener-%d", port)
		p := fmt.Sprintf("pool-%d", port)
		must(t, k.c.Create(k.ctx, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: l},
			Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb-test-1"}, Protocol: lbv1.ListenerTCP, ProtocolPort: port}}))
		members := []lbv1.Member{{Name: "m1", Address: ips[0], ProtocolPort: 8080}, {Name: "m2", Address: ips[1], ProtocolPort: 8080}}
		if port == 80 { // and the real Flask app, on a member host of the node's LAN
			members = append(members, lbv1.Member{Name: "m3", Address: flask, ProtocolPort: 8080})
		}
		must(t, k.c.Create(k.ctx, &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: p},
			Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: l}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
				Members: members}}))
		must(t, k.c.Create(k.ctx, &lbv1.HealthMonitor{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "hm-" + p},
			Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: p}, Type: lbv1.MonitorHTTP, URLPath: "/health",
				Delay: metav1.Duration{Duration: 5 * time.Second}, Timeout: metav1.Duration{Duration: 2 * time.Second}, MaxRetries: 2}}))
	}

	// The seed's test: the output alternates between the back-ends, on both ports (port 80:
	// the two pods and the Flask host).
	for _, port := range []int{80, 443} {
		url := fmt.Sprintf("http://%s:%d/", vip, port)
		var answers []string
		end := time.Now().Add(90 * time.Second)
		for len(answers) < 6 {
			if time.Now().After(end) {
				k.logs()
				t.Fatalf("port %d: %d answers in 90 s: %v", port, len(answers), answers)
			}
			if s, err := fetch(url); err == nil {
				answers = append(answers, strings.TrimSpace(s))
			} else {
				answers = nil // not served yet: start again
				time.Sleep(500 * time.Millisecond)
			}
		}
		want := map[string]bool{"backend-1": true, "backend-2": true}
		if port == 80 {
			want["flask-member"] = true
		}
		seen := map[string]bool{}
		for i, a := range answers {
			host, _, _ := strings.Cut(strings.TrimPrefix(a, "Server : "), " @ ")
			seen[host] = true
			if !want[host] || (i > 0 && a == answers[i-1]) {
				t.Fatalf("port %d: the answers do not alternate between the back-ends %v: %q", port, want, answers)
			}
		}
		if len(seen) != len(want) {
			t.Fatalf("port %d: answers from %v, want all of %v", port, seen, want)
		}
		t.Logf("port %d: %q", port, answers)
	}
	if s, err := fetch("http://" + vip + "/health"); err != nil || s != "healthy!" {
		t.Fatalf("/health through the VIP: %q, %v", s, err)
	}

	// A UDP listener balances too: each new flow (source port) goes to the next member.
	must(t, k.c.Create(k.ctx, &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "listener-udp"},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb-test-1"}, Protocol: lbv1.ListenerUDP, ProtocolPort: 9000}}))
	must(t, k.c.Create(k.ctx, &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "pool-udp"},
		Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "listener-udp"}, Protocol: lbv1.PoolUDP, LBAlgorithm: lbv1.RoundRobin,
			Members: []lbv1.Member{{Name: "m1", Address: ips[0], ProtocolPort: 9000}, {Name: "m2", Address: ips[1], ProtocolPort: 9000}}}}))
	seen := map[string]int{}
	for end := time.Now().Add(90 * time.Second); len(seen) < 2; {
		if time.Now().After(end) {
			k.logs()
			t.Fatalf("UDP through the VIP: answers %v in 90 s, want both back-ends", seen)
		}
		if s, err := askUDP(vip + ":9000"); err == nil {
			seen[s]++
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("UDP 9000: %v", seen)
	k.noForbidden()

	// GitOps: what Flux computes (kstatus) is Current for every object of the
	// release and every l4lb object.
	k.current(k.helm("get", "manifest", "l4lb", "--namespace", "l4lb-system"), app)

	// The leading controller's pod deleted: the other replica leads, and no load balancer's
	// status flaps meanwhile.
	k.deleteLeader(app)

	// The dataplane pod deleted: the DaemonSet replaces it, and no client notices: the
	// kernel carries the listeners between the two agents.
	k.replaceDataplane("dataplane pod deleted", func() {
		pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=dataplane"})
		must(t, err)
		must(t, k.cs.CoreV1().Pods("l4lb-system").Delete(k.ctx, pods.Items[0].Name, metav1.DeleteOptions{}))
	})

	// helm upgrade to a newly built image: the same, for the controller and the dataplane.
	k.image(".", "/l4lb", "65532:65532", imageName+"-upgrade")
	k.replaceDataplane("helm upgrade", func() {
		k.helm("upgrade", "l4lb", "charts/l4lb", "--namespace", "l4lb-system", "--reuse-values", "--set", "image.tag=e2e-upgrade")
	})
	k.resources()
	var ds appsv1.DaemonSet
	must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-dataplane"}, &ds))
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != imageName+"-upgrade" {
		t.Fatalf("after helm upgrade the dataplane runs %s", img)
	}
	k.current(k.helm("get", "manifest", "l4lb", "--namespace", "l4lb-system"), app)
	k.noForbidden()

	// Uninstall: the objects go first (their finalizers need the controller), then the release.
	must(t, k.c.DeleteAllOf(k.ctx, &lbv1.LoadBalancer{}, client.InNamespace(app)))
	k.waitGone(app)
	k.helm("uninstall", "l4lb", "--namespace", "l4lb-system", "--wait", "--timeout", "2m")
	end := time.Now().Add(60 * time.Second)
	for {
		var leases coordinationv1.LeaseList
		must(t, k.c.List(k.ctx, &leases, client.InNamespace("l4lb-system")))
		addrs := run(t, nil, "ip", "-n", k.ns, "-o", "addr", "show")
		tables := k.nftTables()
		if len(leases.Items) == 0 && !strings.Contains(addrs, vip) && len(tables) == 0 {
			break
		}
		if time.Now().After(end) {
			var left []string
			for _, l := range leases.Items {
				left = append(left, fmt.Sprintf("%s (owners %v, holder %v)", l.Name, l.OwnerReferences, ptr.Deref(l.Spec.HolderIdentity, "")))
			}
			t.Fatalf("after helm uninstall: Leases left %v, VIP on the node: %v, l4lb's nftables tables: %v",
				left, strings.Contains(addrs, vip), tables)
		}
		time.Sleep(time.Second)
	}
}

// install installs the chart with the image built here (and the values given), uninstalled at
// cleanup, and waits for the controller and the whole DaemonSet to be Ready.
func (k *cluster) install(values ...string) {
	t := k.t
	args := []string{"install", "l4lb", "charts/l4lb", "--namespace", "l4lb-system", "--create-namespace",
		"--set", "image.repository=l4lb.local/l4lb", "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never"}
	k.helm(append(append(args, values...), "--wait", "--timeout", "3m")...)
	t.Cleanup(func() { // the next test on this cluster starts clean, without the namespace
		cmd := exec.Command(filepath.Join(testenv.Root(), "bin", "helm"), "uninstall", "l4lb", "--namespace", "l4lb-system", "--ignore-not-found", "--wait")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+k.kubeconfig)
		cmd.Run()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-system"}}
		k.c.Delete(context.Background(), ns)
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			if err := k.c.Get(context.Background(), client.ObjectKeyFromObject(ns), ns); err != nil {
				break
			}
		}
	})
	// helm --wait counts a DaemonSet ready within its maxUnavailable: wait for all of it.
	end := time.Now().Add(2 * time.Minute)
	for {
		var dep appsv1.Deployment
		must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-controller"}, &dep))
		var ds appsv1.DaemonSet
		must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-dataplane"}, &ds))
		if dep.Status.ReadyReplicas == *dep.Spec.Replicas && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled && ds.Status.NumberReady > 0 {
			break
		}
		if time.Now().After(end) {
			k.logs()
			t.Fatalf("installed, not ready: controller %d/%d, dataplane %d/%d", dep.Status.ReadyReplicas, *dep.Spec.Replicas, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
		}
		time.Sleep(time.Second)
	}
}

// current fails unless kstatus (sigs.k8s.io/cli-utils, what Flux and Argo CD use) computes
// Current for every object of the manifests and every l4lb object of namespace ns.
func (k *cluster) current(manifests, ns string) {
	objs, err := testenv.Documents([]byte(manifests))
	must(k.t, err)
	for _, kind := range []string{"LoadBalancer", "Listener", "Pool", "HealthMonitor"} {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(lbv1.GroupVersion.WithKind(kind + "List"))
		must(k.t, k.c.List(k.ctx, l, client.InNamespace(ns)))
		for i := range l.Items {
			objs = append(objs, &l.Items[i])
		}
	}
	end := time.Now().Add(time.Minute)
	for {
		var notCurrent []string
		for _, o := range objs {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			namespace := o.GetNamespace()
			if namespaced, err := k.c.IsObjectNamespaced(o); err == nil && namespaced && namespace == "" {
				namespace = "l4lb-system"
			}
			if err := k.c.Get(k.ctx, client.ObjectKey{Namespace: namespace, Name: o.GetName()}, live); err != nil {
				notCurrent = append(notCurrent, fmt.Sprintf("%s %s: %v", o.GetKind(), o.GetName(), err))
				continue
			}
			res, err := status.Compute(live)
			if err != nil || res.Status != status.CurrentStatus {
				notCurrent = append(notCurrent, fmt.Sprintf("%s %s: %v %v", o.GetKind(), o.GetName(), res, err))
			}
		}
		if len(notCurrent) == 0 {
			k.t.Logf("kstatus: %d objects Current", len(objs))
			return
		}
		if time.Now().After(end) {
			k.t.Fatalf("kstatus, not Current after a minute: %v", notCurrent)
		}
		time.Sleep(time.Second)
	}
}

// deleteLeader deletes the leading controller's pod and watches, until another leads and
// for 10 s after, that every load balancer of ns stays ACTIVE and Ready.
func (k *cluster) deleteLeader(ns string) {
	var lease coordinationv1.Lease
	must(k.t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-controller.lb.l4lb.io"}, &lease))
	leader, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
	must(k.t, k.cs.CoreV1().Pods("l4lb-system").Delete(k.ctx, leader, metav1.DeleteOptions{}))
	var newLeader string
	var settled time.Time
	end := time.Now().Add(2 * time.Minute)
	for settled.IsZero() || time.Since(settled) < 10*time.Second {
		var lbs lbv1.LoadBalancerList
		must(k.t, k.c.List(k.ctx, &lbs, client.InNamespace(ns)))
		for _, lb := range lbs.Items {
			ready := meta.IsStatusConditionTrue(lb.Status.Conditions, lbv1.ConditionReady)
			if lb.Status.ProvisioningStatus != lbv1.ProvisioningActive || !ready {
				k.t.Fatalf("while the leader changed, %s went %s (Ready %v)", lb.Name, lb.Status.ProvisioningStatus, ready)
			}
		}
		if settled.IsZero() {
			if err := k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: "l4lb-controller.lb.l4lb.io"}, &lease); err == nil && lease.Spec.HolderIdentity != nil {
				if h, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_"); h != leader && h != "" {
					newLeader, settled = h, time.Now()
				}
			}
		}
		if time.Now().After(end) {
			k.t.Fatalf("no new leader two minutes after %s was deleted", leader)
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.t.Logf("controller %s deleted, %s leads; statuses held", leader, newLeader)
}

// nftTables lists l4lb's nftables tables on the node.
func (k *cluster) nftTables() []string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	must(k.t, err)
	defer orig.Close()
	target, err := netns.GetFromName(k.ns)
	must(k.t, err)
	defer target.Close()
	must(k.t, netns.Set(target))
	defer netns.Set(orig)
	c, err := nftables.New()
	must(k.t, err)
	tables, err := c.ListTables()
	must(k.t, err)
	var out []string
	for _, t := range tables {
		if strings.HasPrefix(t.Name, "l4lb") {
			out = append(out, t.Name)
		}
	}
	return out
}

// TestKustomizeInstall installs what `kubectl apply -k config/default` installs, with the image
// built here: the controller and the dataplane become Ready with their own RBAC, kstatus says
// Current, and deleting it leaves nothing.
func TestKustomizeInstall(t *testing.T) {
	k := newCluster(t)
	k.images()
	rendered := run(t, nil, "kubectl", "kustomize", "config/default")
	rendered = strings.ReplaceAll(rendered, "ghcr.io/l4lb/l4lb:latest", imageName)
	manifest := filepath.Join(k.dir, "l4lb.yaml")
	must(t, os.WriteFile(manifest, []byte(rendered), 0o644))
	kubectl := func(args ...string) string {
		return run(t, []string{"KUBECONFIG=" + k.kubeconfig}, append([]string{"kubectl"}, args...)...)
	}
	kubectl("apply", "--server-side", "--force-conflicts", "-f", manifest)
	kubectl("-n", "l4lb-system", "rollout", "status", "deployment/l4lb-controller", "--timeout=3m")
	kubectl("-n", "l4lb-system", "rollout", "status", "daemonset/l4lb-dataplane", "--timeout=3m")
	k.current(rendered, "default")
	k.noForbidden()
	kubectl("delete", "-f", manifest, "--wait", "--timeout=3m")
	if out := kubectl("get", "namespaces", "-o", "name"); strings.Contains(out, "namespace/l4lb-system") {
		t.Fatalf("l4lb-system still there after kubectl delete: %s", out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (k *cluster) waitPodIP(ns, name string) string {
	end := time.Now().Add(2 * time.Minute)
	for {
		var pod corev1.Pod
		if err := k.c.Get(k.ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err == nil && pod.Status.PodIP != "" {
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return pod.Status.PodIP
				}
			}
		}
		if time.Now().After(end) {
			k.t.Fatalf("pod %s/%s not ready in 2 minutes", ns, name)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (k *cluster) waitGone(ns string) {
	end := time.Now().Add(time.Minute)
	for {
		var lbs lbv1.LoadBalancerList
		must(k.t, k.c.List(k.ctx, &lbs, client.InNamespace(ns)))
		if len(lbs.Items) == 0 {
			return
		}
		if time.Now().After(end) {
			k.t.Fatalf("%d load balancers still there a minute after deletion (finalizer)", len(lbs.Items))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// podLogs returns the logs of every container of l4lb's pods.
func (k *cluster) podLogs() map[string]string {
	pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{})
	must(k.t, err)
	out := map[string]string{}
	for _, p := range pods.Items {
		b, err := k.cs.CoreV1().Pods("l4lb-system").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(k.ctx)
		if err != nil {
			b = []byte(err.Error())
		}
		out[p.Name] = string(b)
	}
	return out
}

func (k *cluster) logs() {
	for name, l := range k.podLogs() {
		lines := strings.Split(strings.TrimSpace(l), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		k.t.Logf("%s:\n%s", name, strings.Join(lines, "\n"))
	}
}

// flaskHost runs the seed's Flask app (hack/backend/app.py, as the seed writes it) on a member
// host of its own: a network namespace linked to the node (203.0.113.2, the node 203.0.113.1).
func (k *cluster) flaskHost() string {
	t := k.t
	const host, addr = "l4lb-e2e-flask", "203.0.113.2"
	run(t, nil, "ip", "netns", "add", host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	run(t, nil, "ip", "link", "add", "flask0", "netns", k.ns, "type", "veth", "peer", "name", "eth0", "netns", host)
	run(t, nil, "ip", "-n", k.ns, "addr", "add", "203.0.113.1/24", "dev", "flask0")
	run(t, nil, "ip", "-n", k.ns, "link", "set", "flask0", "up")
	run(t, nil, "ip", "-n", host, "addr", "add", addr+"/24", "dev", "eth0")
	run(t, nil, "ip", "-n", host, "link", "set", "eth0", "up")
	run(t, nil, "ip", "-n", host, "link", "set", "lo", "up")
	run(t, nil, "ip", "-n", host, "route", "add", "default", "via", "203.0.113.1")
	// ip netns exec shows /etc/netns/<host>/ as /etc: the host knows its own name without a
	// DNS server (the server looks its address up when it binds).
	etc := filepath.Join("/etc/netns", host)
	must(t, os.MkdirAll(etc, 0o755))
	t.Cleanup(func() { os.RemoveAll(etc) })
	must(t, os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"+addr+" flask-member\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(etc, "resolv.conf"), nil, 0o644))
	cmd := exec.Command("ip", "netns", "exec", host, "/usr/bin/python3", "hack/backend/app.py", "-p", "8080", "--bind", addr, "--name", "flask-member")
	cmd.Dir = testenv.Root()
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if out, _ := exec.Command("ip", "netns", "exec", host, "ss", "-Hltn", "sport = :8080").Output(); len(out) > 0 {
			return addr
		}
		if time.Now().After(end) {
			t.Fatal("the Flask app does not listen a minute after it started")
		}
	}
}

// replaceDataplane makes the dataplane pod go and come back (change does it: a deletion, an
// upgrade) while a client opens a connection to the VIP every 20 ms, as the failover tests
// do, and another keeps one HTTP connection open across it, through a listener the kernel
// carries; it fails unless no connection failed or waited for a lost SYN to be sent again,
// the open connection answered before, while the old pod terminated and once the new one was
// ready, and the new agent took the listeners over from the kernel. Nothing in the old pod's
// log may be an RBAC refusal.
func (k *cluster) replaceDataplane(what string, change func()) {
	t := k.t
	pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=dataplane"})
	must(t, err)
	if len(pods.Items) != 1 {
		t.Fatalf("%s: %d dataplane pods", what, len(pods.Items))
	}
	old := pods.Items[0]
	oldLog := k.followLog(old.Name)
	var l443 lbv1.Listener // the seed's (TestHelmInstallSeedAndUninstall)
	must(t, k.c.Get(k.ctx, client.ObjectKey{Namespace: "seed", Name: "listener-443"}, &l443))
	if l443.Status.DataPath != lbv1.DataPathKernel {
		t.Fatalf("%s: listener-443 is carried by %q, want the kernel path", what, l443.Status.DataPath)
	}
	kept := dialHTTP(t, vip+":443")
	kept.get(t, what+": before")
	load := startTraffic("http://" + vip + "/")
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	change()
	// The open connection goes on while the old pod terminates, and after the new one is ready.
	for {
		var p corev1.Pod
		err := k.c.Get(k.ctx, client.ObjectKey{Namespace: "l4lb-system", Name: old.Name}, &p)
		if err != nil || !p.DeletionTimestamp.IsZero() {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("%s: the old dataplane pod is not terminating after a minute", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	kept.get(t, what+": old pod terminating")
	defer kept.c.Close()
	// The new pod is ready and the old one gone: the clients' counts are final.
	newPod := ""
	for newPod == "" {
		if time.Since(start) > 2*time.Minute {
			k.logs()
			t.Fatalf("%s: no new dataplane pod ready in two minutes", what)
		}
		time.Sleep(200 * time.Millisecond)
		pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=dataplane"})
		must(t, err)
		if len(pods.Items) != 1 || pods.Items[0].UID == old.UID {
			continue
		}
		for _, c := range pods.Items[0].Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				newPod = pods.Items[0].Name
			}
		}
	}
	time.Sleep(time.Second)
	kept.get(t, what+": new pod ready")
	r := load.stop()
	fmt.Printf("%s on a one-node cluster: %d connections answered, %d failed, %d answered only after a lost SYN; new pod %s ready after %v\n",
		what, r.ok, r.failed, r.resent, newPod, time.Since(start).Round(100*time.Millisecond))
	if r.failed != 0 || r.resent != 0 || r.ok == 0 {
		k.logs()
		t.Fatalf("%s: %d of %d connections failed (first errors %v), %d answered only after a lost SYN", what, r.failed, r.ok+r.failed, r.errs, r.resent)
	}
	// The new agent has taken the listeners over from the kernel.
	for {
		b, err := k.cs.CoreV1().Pods("l4lb-system").GetLogs(newPod, &corev1.PodLogOptions{}).DoRaw(k.ctx)
		if err == nil && strings.Contains(string(b), "took the listeners over from the kernel") {
			break
		}
		if time.Since(start) > 2*time.Minute {
			k.logs()
			t.Fatalf("%s: the new dataplane pod did not take the listeners over from the kernel", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if l := oldLog(); refusedByRBAC(l) || !strings.Contains(l, "listeners handed to the kernel") {
		t.Fatalf("%s: the old agent's log:\n%s", what, l)
	}
}

// followLog streams a pod's log until the pod ends; the function returned waits for that.
func (k *cluster) followLog(pod string) func() string {
	var b strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := k.cs.CoreV1().Pods("l4lb-system").GetLogs(pod, &corev1.PodLogOptions{Follow: true}).Stream(k.ctx)
		if err != nil {
			b.WriteString(err.Error())
			return
		}
		defer s.Close()
		io.Copy(&b, s)
	}()
	return func() string {
		select {
		case <-done:
		case <-time.After(time.Minute):
			return "the log did not end a minute after the pod was replaced"
		}
		return b.String()
	}
}

// httpConn is one HTTP/1.1 connection, kept open between requests.
type httpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	must(t, err)
	return &httpConn{c: c, r: bufio.NewReader(c)}
}

// get GETs / on the open connection and returns the answer.
func (h *httpConn) get(t *testing.T, what string) string {
	t.Helper()
	h.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", vip); err != nil {
		t.Fatalf("%s: the open connection: %v", what, err)
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		t.Fatalf("%s: the open connection: %v", what, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(string(b), "Server : ") {
		t.Fatalf("%s: the open connection answered %q, %v", what, b, err)
	}
	return string(b)
}

// traffic opens a new connection to a URL every 20 ms, whatever became of the last ones.
type traffic struct {
	mu    sync.Mutex
	res   trafficResult
	done  chan struct{}
	ended sync.WaitGroup
}

type trafficResult struct {
	ok, failed, resent int
	errs               []string
}

func startTraffic(url string) *traffic {
	tr := &traffic{done: make(chan struct{})}
	tr.ended.Add(1)
	go func() {
		defer tr.ended.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			tr.ended.Add(1)
			go func() {
				defer tr.ended.Done()
				start := time.Now()
				s, err := fetch(url)
				tr.mu.Lock()
				defer tr.mu.Unlock()
				switch {
				case err != nil || !strings.HasPrefix(s, "Server : "):
					tr.res.failed++
					if len(tr.res.errs) < 3 {
						tr.res.errs = append(tr.res.errs, fmt.Sprintf("%s: %q %v", start.Format("15:04:05.000"), s, err))
					}
				case time.Since(start) >= time.Second: // a SYN was lost and sent again
					tr.res.resent++
				default:
					tr.res.ok++
				}
			}()
			select {
			case <-tr.done:
				return
			case <-tick.C:
			}
		}
	}()
	return tr
}

func (tr *traffic) stop() trafficResult {
	close(tr.done)
	tr.ended.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.res
}

// resources prints what l4lb's containers use under load (a client opening a connection to the
// VIP every 20 ms for 10 s), as the kubelet measures it (its summary API, cAdvisor), against
// the chart's requests and limits; a container over its memory limit fails the test.
func (k *cluster) resources() {
	t := k.t
	load := startTraffic("http://" + vip + "/")
	time.Sleep(10 * time.Second)
	var summary struct {
		Pods []struct {
			PodRef     struct{ Name, Namespace string }
			Containers []struct {
				Name string
				CPU  struct {
					UsageNanoCores uint64
				}
				Memory struct {
					WorkingSetBytes uint64
				}
			}
		}
	}
	b, err := k.cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", os.Getenv("L4LB_CLUSTER_NODE"), "proxy/stats/summary").DoRaw(k.ctx)
	must(t, err)
	must(t, json.Unmarshal(b, &summary))
	r := load.stop()
	pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{})
	must(t, err)
	limits := map[string]corev1.ResourceRequirements{}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			limits[p.Name+"/"+c.Name] = c.Resources
		}
	}
	seen := 0
	for _, p := range summary.Pods {
		if p.PodRef.Namespace != "l4lb-system" {
			continue
		}
		for _, c := range p.Containers {
			res, ok := limits[p.PodRef.Name+"/"+c.Name]
			if !ok {
				continue // a pod gone since
			}
			seen++
			mem := c.Memory.WorkingSetBytes
			fmt.Printf("resources under %d connections/s: %s/%s cpu %dm, memory %d Mi (requests %s cpu, %s memory; memory limit %s)\n",
				r.ok/10, p.PodRef.Name, c.Name, c.CPU.UsageNanoCores/1e6, mem>>20,
				res.Requests.Cpu(), res.Requests.Memory(), res.Limits.Memory())
			if l := res.Limits.Memory(); !l.IsZero() && int64(mem) > l.Value() {
				t.Errorf("%s/%s uses %d bytes of memory, over its limit %s", p.PodRef.Name, c.Name, mem, l)
			}
		}
	}
	if seen == 0 {
		t.Fatalf("the kubelet's summary has no l4lb container: %.500s", b)
	}
}

// refusedByRBAC reports whether a log holds an authorisation refusal ("... is forbidden: User
// ... cannot ..."), not another 403 (an event in a namespace being deleted, say).
func refusedByRBAC(log string) bool {
	return strings.Contains(log, "is forbidden: User ")
}

// noForbidden fails when RBAC refused any l4lb pod anything: the service accounts' own rights
// must be enough.
func (k *cluster) noForbidden() {
	for name, l := range k.podLogs() {
		for _, line := range strings.Split(l, "\n") {
			if refusedByRBAC(line) {
				k.t.Errorf("%s was refused by RBAC: %s", name, line)
			}
		}
	}
}
