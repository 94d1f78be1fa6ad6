package e2e

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/gateway"
)

// The Gateway API's own conformance suite (its conformance package at go.mod's version,
// unchanged), for the features l4lb claims: the GATEWAY-TCP and GATEWAY-UDP profiles. Its report
// goes to docs/gateway-api-conformance.yaml (L4LB_CONFORMANCE_REPORT overrides where).

// skipped are the tests of the claimed features that exercise HTTP or HTTPS listeners, which
// l4lb refuses (UnsupportedProtocol, as the specification says a layer-4 implementation does):
// they expect HTTPRoute as a listener's supported kind or certificate references resolved.
var skipped = []string{
	"GatewayListenerUnsupportedProtocol", // its second Gateway's HTTP listener must be Accepted
	"GatewayModifyListeners",
	"GatewayObservedGenerationBump",
	"GatewayInvalidRouteKind",
	"GatewayInvalidTLSConfiguration",
	"GatewaySecretInvalidReferenceGrant",
	"GatewaySecretMissingReferenceGrant",
	"GatewaySecretReferenceGrantAllInNamespace",
	"GatewaySecretReferenceGrantSpecific",
}

// fromProxy builds a command of a module at a version from the Go module proxy, once (cached
// under ~/.cache/l4lb/conformance), and returns the binary.
func fromProxy(t *testing.T, pkgAtVersion string) string {
	cache := os.Getenv("L4LB_CACHE")
	if cache == "" {
		home, _ := os.UserCacheDir()
		cache = filepath.Join(home, "l4lb")
	}
	dir := filepath.Join(cache, "conformance", strings.NewReplacer("/", "_", "@", "_").Replace(pkgAtVersion))
	bin := filepath.Join(dir, filepath.Base(strings.Split(pkgAtVersion, "@")[0]))
	if _, err := os.Stat(bin); err != nil {
		run(t, []string{"GOBIN=" + dir, "CGO_ENABLED=0"}, "go", "install", "-ldflags=-s -w", pkgAtVersion)
	}
	return bin
}

// suiteBackends builds the suite's back-ends from their Go sources into dir: its echo server
// (the conformance module's, at go.mod's version) and CoreDNS for the UDP tests (from the
// module proxy, at the version its manifests name). It returns each binary with the image tags
// the suite's manifests give it.
func suiteBackends(t *testing.T, dir string) (echo string, echoTags []string, coredns, corednsTag string) {
	echo = filepath.Join(dir, "echo-basic")
	run(t, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", echo, "sigs.k8s.io/gateway-api/conformance/echo-basic")
	tags := suiteImages(t, "registry.k8s.io/coredns/coredns:")
	if len(tags) != 1 {
		t.Fatalf("the suite's manifests name CoreDNS images %v, want one", tags)
	}
	coredns = fromProxy(t, "github.com/coredns/coredns@"+strings.TrimPrefix(tags[0], "registry.k8s.io/coredns/coredns:"))
	return echo, suiteImages(t, "registry.k8s.io/gateway-api/echo-basic:"), coredns, tags[0]
}

// TestGatewayAPISuiteBackendsBuild needs no cluster: hack/test.sh runs it in the background
// while other tests run, so the conformance test finds both back-ends built (CoreDNS compiles
// for minutes the first time). The CoreDNS built is the version the suite's manifests name.
func TestGatewayAPISuiteBackendsBuild(t *testing.T) {
	_, tags, coredns, tag := suiteBackends(t, t.TempDir())
	if len(tags) == 0 {
		t.Fatal("the suite's manifests name no echo-basic image")
	}
	version := strings.TrimPrefix(strings.TrimPrefix(tag, "registry.k8s.io/coredns/coredns:"), "v")
	if out := run(t, nil, coredns, "-version"); !strings.Contains(out, "CoreDNS-"+version) {
		t.Fatalf("%s -version: %q, want CoreDNS-%s", coredns, out, version)
	}
}

// suiteImages lists the images named prefix+tag in the suite's manifests.
func suiteImages(t *testing.T, prefix string) []string {
	found := map[string]bool{}
	err := fs.WalkDir(&conformance.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := fs.ReadFile(&conformance.Manifests, path)
		for _, line := range strings.Split(string(b), "\n") {
			if img, ok := strings.CutPrefix(strings.TrimSpace(line), "image: "); ok && strings.HasPrefix(img, prefix) {
				found[img] = true
			}
		}
		return err
	})
	must(t, err)
	return slices.Sorted(maps.Keys(found))
}

// pack packs bin into an image under each tag and loads it on the node.
func (k *cluster) pack(bin, path, user string, tags ...string) {
	for _, tag := range tags {
		tar := filepath.Join(k.dir, strings.NewReplacer("/", "_", ":", "_").Replace(tag)+".tar")
		run(k.t, nil, "go", "run", "./hack/image", "-binary", bin, "-path", path, "-user", user, "-tag", tag, "-o", tar)
		run(k.t, nil, "hack/cluster.sh", "load", tar)
	}
}

func TestGatewayAPIConformance(t *testing.T) {
	k := newCluster(t)
	k.images()
	k.gatewayAPI()
	k.install()
	echo, echoTags, coredns, corednsTag := suiteBackends(t, k.dir)
	k.pack(echo, "/echo-basic", "65532:65532", echoTags...)
	// CoreDNS binds port 53 with the capability its pod adds, which only root's processes get.
	k.pack(coredns, "/coredns", "0:0", corednsTag)

	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "l4lb-conformance"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}
	// Addresses for the suite's namespaces' Gateways.
	pool := &lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "gateway-conformance"},
		Spec: lbv1.VIPPoolSpec{Addresses: []string{"198.51.100.224/28"}, Namespaces: []string{"gateway-conformance-infra", "gateway-conformance-app-backend", "gateway-conformance-web-backend"}}}
	must(t, k.c.Create(k.ctx, class))
	must(t, k.c.Create(k.ctx, pool))
	t.Cleanup(func() {
		k.c.Delete(context.Background(), class)
		k.c.Delete(context.Background(), pool)
		// The namespaces' load balancers need the controller to release their VIPs: gone
		// before the chart is uninstalled (the cleanup before this one).
		for _, ns := range pool.Spec.Namespaces {
			k.c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
			var lbs lbv1.LoadBalancerList
			if err := k.c.List(context.Background(), &lbs); err != nil || len(lbs.Items) == 0 {
				break
			}
		}
	})

	// The suite reads the features to test from the GatewayClass's status, as l4lb writes it.
	for end := time.Now().Add(time.Minute); len(class.Status.SupportedFeatures) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			k.logs()
			t.Fatalf("the GatewayClass has no supported features a minute on: %+v", class.Status)
		}
		must(t, k.c.Get(k.ctx, client.ObjectKeyFromObject(class), class))
	}
	t.Setenv("KUBECONFIG", k.kubeconfig)
	opts := conformance.DefaultOptions(t)
	opts.GatewayClassName = class.Name
	opts.ConformanceProfiles = []suite.ConformanceProfileName{suite.GatewayTCPConformanceProfileName, suite.GatewayUDPConformanceProfileName}
	opts.SkipTests = skipped
	opts.CleanupBaseResources = true
	opts.Implementation = confv1.Implementation{Organization: "l4lb", Project: "l4lb", URL: "https://github.com/l4lb/l4lb",
		Version: "main", Contact: []string{"https://github.com/l4lb/l4lb/issues"}}
	opts.ReportOutputPath = os.Getenv("L4LB_CONFORMANCE_REPORT")
	if opts.ReportOutputPath == "" {
		opts.ReportOutputPath = filepath.Join(t.TempDir(), "report.yaml")
	}
	opts.TimeoutConfig.NamespacesMustBeReady = 5 * time.Minute
	conformance.RunConformanceWithOptions(t, opts)
	if t.Failed() {
		k.logs()
		cmd := exec.Command("kubectl", "get", "pods", "-A", "-o", "wide")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+k.kubeconfig)
		out, _ := cmd.CombinedOutput()
		t.Logf("pods:\n%s", out)
	}
}
