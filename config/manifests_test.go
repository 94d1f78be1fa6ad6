// Package config holds the kustomize manifests; this test proves that what users install,
// with kubectl apply -k or with Helm, is accepted by a real API server.
package config

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l4lb/l4lb/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	// With the Gateway API's CRDs, as a cluster that has them: the controller's rights on them
	// are checked too.
	gw, err := testenv.GatewayAPICRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if env, err = testenv.Start(gw); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = testenv.Root()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return out
}

// documents splits a YAML stream into its objects.
func documents(t *testing.T, manifests []byte) []*unstructured.Unstructured {
	t.Helper()
	out, err := testenv.Documents(manifests)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dryRun applies every document with a server-side dry run, as kubectl apply --dry-run=server.
func dryRun(t *testing.T, manifests []byte) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	for _, u := range documents(t, manifests) {
		// Namespaces are created for real so the namespaced objects can be checked in them.
		if u.GetKind() == "Namespace" {
			if err := env.Client.Create(ctx, u); client.IgnoreAlreadyExists(err) != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.DryRunAll, client.FieldOwner("test"), client.ForceOwnership); err != nil {
			t.Errorf("%s %s refused: %v", u.GetKind(), u.GetName(), err)
		}
		n++
	}
	return n
}

func TestKustomizeDefaultIsAccepted(t *testing.T) {
	out := run(t, "kubectl", "kustomize", "config/default")
	if n := dryRun(t, out); n < 10 {
		t.Fatalf("only %d objects", n)
	}
}

func TestHelmChartLintsAndIsAccepted(t *testing.T) {
	helm := filepath.Join(testenv.Root(), "bin", "helm")
	run(t, helm, "lint", "charts/l4lb")
	if err := env.Client.Create(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "l4lb"}}}); err != nil {
		t.Fatal(err)
	}
	out := run(t, helm, "template", "l4lb", "charts/l4lb", "--namespace", "l4lb", "--include-crds",
		"--set", "controller.vipRanges={192.0.2.240/28}", "--set", "controller.openstack.secretName=openstack-credentials",
		"--set", "octaviaAPI.enabled=true", "--set", "octaviaAPI.tls.secretName=octavia-tls")
	if n := dryRun(t, out); n < 10 {
		t.Fatalf("only %d objects", n)
	}
}
