// Package e2e runs l4lb as users install it: the image built here, the chart installed with
// Helm on a real cluster (hack/cluster.sh: kubelet, containerd, kube-proxy), the seed's
// walkthrough through the pods, and the uninstall. hack/test.sh brings the cluster up and
// down around it.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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

// TestHelmInstallSeedAndUninstall installs the chart with the image built here, runs the seed's
// walkthrough through the pods (two members as pods of the seed's app, listeners on 80 and
// 443, round robin, an HTTP monitor on /health) from a client outside the cluster, checks that
// no l4lb pod was refused anything by RBAC, and uninstalls: no VIP, no Lease left behind.
func TestHelmInstallSeedAndUninstall(t *testing.T) {
	k := newCluster(t)
	k.image(".", "/l4lb", "65532:65532", imageName)
	k.image("./hack/seedapp", "/seedapp", "65532:65532", seedImage)

	k.helm("install", "l4lb", "charts/l4lb", "--namespace", "l4lb-system", "--create-namespace",
		"--set", "image.repository=l4lb.local/l4lb", "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
		"--wait", "--timeout", "3m")
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
	var ips []string
	for _, name := range []string{"backend-1", "backend-2"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: seedImage, ImagePullPolicy: corev1.PullNever,
				Args:           []string{"-p", "8080"},
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
