// Package e2e runs l4lb as users install it: the image built here, the chart installed with
// Helm on a real cluster (hack/cluster.sh: kubelet, containerd, kube-proxy), the seed's
// walkthrough through the pods, and the uninstall. hack/test.sh brings the cluster up and
// down around it.
package e2e

import (
	"context"
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
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers"
	"github.com/l4lb/l4lb/controllers/testenv"
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
	c, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
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

	k.helm("install", "l4lb", "charts/l4lb", "--namespace", "l4lb-system", "--create-namespace",
		"--set", "image.repository=l4lb.local/l4lb", "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
		"--wait", "--timeout", "3m")
	t.Cleanup(func() { // after a failure: the next test on this cluster starts clean
		cmd := exec.Command(filepath.Join(testenv.Root(), "bin", "helm"), "uninstall", "l4lb", "--namespace", "l4lb-system", "--ignore-not-found", "--wait")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+k.kubeconfig)
		cmd.Run()
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
		must(t, k.c.Create(k.ctx, &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: p},
			Spec: lbv1.PoolSpec{ListenerRef: lbv1.ObjectReference{Name: l}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
				Members: []lbv1.Member{{Name: "m1", Address: ips[0], ProtocolPort: 8080}, {Name: "m2", Address: ips[1], ProtocolPort: 8080}}}}))
		must(t, k.c.Create(k.ctx, &lbv1.HealthMonitor{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "hm-" + p},
			Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: p}, Type: lbv1.MonitorHTTP, URLPath: "/health",
				Delay: metav1.Duration{Duration: 5 * time.Second}, Timeout: metav1.Duration{Duration: 2 * time.Second}, MaxRetries: 2}}))
	}

	// The seed's test: the output alternates between both back-ends, on both ports.
	for _, port := range []int{80, 443} {
		url := fmt.Sprintf("http://%s:%d/", vip, port)
		var answers []string
		end := time.Now().Add(90 * time.Second)
		for len(answers) < 4 {
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
		for i := 1; i < len(answers); i++ {
			if answers[i] == answers[i-1] || !strings.HasPrefix(answers[i], "Server : backend-") {
				t.Fatalf("port %d: the answers do not alternate between both back-ends: %q", port, answers)
			}
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
		Spec: lbv1.PoolSpec{ListenerRef: lbv1.ObjectReference{Name: "listener-udp"}, Protocol: lbv1.PoolUDP, LBAlgorithm: lbv1.RoundRobin,
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

	// GitOps: what Flux and Argo CD compute (kstatus) is Current for every object of the
	// release and every l4lb object.
	k.current(k.helm("get", "manifest", "l4lb", "--namespace", "l4lb-system"), app)

	// The leading controller's pod deleted: the other replica leads, and no load balancer's
	// status flaps meanwhile.
	k.deleteLeader(app)

	// The dataplane pod deleted: the DaemonSet replaces it and the VIP answers again.
	pods, err := k.cs.CoreV1().Pods("l4lb-system").List(k.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=dataplane"})
	must(t, err)
	if len(pods.Items) != 1 {
		t.Fatalf("%d dataplane pods", len(pods.Items))
	}
	deleted := time.Now()
	must(t, k.cs.CoreV1().Pods("l4lb-system").Delete(k.ctx, pods.Items[0].Name, metav1.DeleteOptions{}))
	for {
		if s, err := fetch("http://" + vip + "/"); err == nil && strings.HasPrefix(s, "Server : backend-") {
			// Only once the old pod is gone: a single node serves until it drains.
			if _, err := k.cs.CoreV1().Pods("l4lb-system").Get(k.ctx, pods.Items[0].Name, metav1.GetOptions{}); err != nil {
				break
			}
		}
		if time.Since(deleted) > 2*time.Minute {
			k.logs()
			t.Fatal("the VIP does not answer two minutes after the dataplane pod was deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("dataplane pod deleted on a one-node cluster: the VIP answered from its replacement after %v\n", time.Since(deleted).Round(100*time.Millisecond))
	k.noForbidden()

	// Uninstall: the objects go first (their finalizers need the controller), then the release.
	must(t, k.c.DeleteAllOf(k.ctx, &lbv1.LoadBalancer{}, client.InNamespace(app)))
	k.waitGone(app)
	k.helm("uninstall", "l4lb", "--namespace", "l4lb-system", "--wait", "--timeout", "2m")
	end = time.Now().Add(60 * time.Second)
	for {
		var leases coordinationv1.LeaseList
		must(t, k.c.List(k.ctx, &leases, client.InNamespace("l4lb-system")))
		addrs := run(t, nil, "ip", "-n", k.ns, "-o", "addr", "show")
		tables := k.nftTables()
		if len(leases.Items) == 0 && !strings.Contains(addrs, vip) && len(tables) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after helm uninstall: %d Leases left, VIP on the node: %v, l4lb's nftables tables: %v",
				len(leases.Items), strings.Contains(addrs, vip), tables)
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

// noForbidden fails when RBAC refused any l4lb pod anything: the service accounts' own rights
// must be enough.
func (k *cluster) noForbidden() {
	for name, l := range k.podLogs() {
		for _, line := range strings.Split(l, "\n") {
			if strings.Contains(line, "forbidden") {
				k.t.Errorf("%s was refused by RBAC: %s", name, line)
			}
		}
	}
}
