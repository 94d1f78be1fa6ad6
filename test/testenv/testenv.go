// Package testenv starts a real kube-apiserver and etcd (envtest) with the l4lb CRDs
// installed, for the tests of every package that talks to Kubernetes.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/l4lb/l4lb/internal/manager"
)

// Root is the repository's top folder: the nearest folder above the working directory (a
// test's is its package's) that holds go.mod. Found from there, not from this file's path,
// because make builds with -trimpath, which leaves no folder in runtime.Caller's answers.
func Root() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("no go.mod above the working directory")
		}
		dir = parent
	}
}

// SetAssets points KUBEBUILDER_ASSETS at the kube-apiserver and etcd that
// hack/envtest-assets.sh builds (once) from the Go module proxy, unless it is already set.
func SetAssets() error {
	if os.Getenv("KUBEBUILDER_ASSETS") != "" {
		return nil
	}
	out, err := exec.Command(filepath.Join(Root(), "hack", "envtest-assets.sh")).Output()
	if err != nil {
		return fmt.Errorf("finding kube-apiserver and etcd with hack/envtest-assets.sh: %w", err)
	}
	return os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out)))
}

// Env is a running API server with the CRDs installed.
type Env struct {
	env    *envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Start starts the API server with l4lb's CRDs and those in crdDirs. KUBEBUILDER_ASSETS, when
// unset, is found (or built once) by hack/envtest-assets.sh, so `go test ./...` works as well
// as `make test`.
func Start(crdDirs ...string) (*Env, error) {
	if err := SetAssets(); err != nil {
		return nil, err
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     append([]string{filepath.Join(Root(), "config", "crd", "bases")}, crdDirs...),
		ErrorIfCRDPathMissing: true,
		Scheme:                manager.NewScheme(),
	}
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: e.Scheme})
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	return &Env{env: e, Config: cfg, Client: c}, nil
}

// ForTest is Start for one test: it fails the test when the API server does not start, and
// stops it when the test ends.
func ForTest(t testing.TB, crdDirs ...string) *Env {
	t.Helper()
	env, err := Start(crdDirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	return env
}

// GatewayAPICRDs is the folder of the Gateway API's standard CRDs at go.mod's version (a
// cluster's, not l4lb's: the chart installs none).
func GatewayAPICRDs() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("finding the Gateway API module: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard"), nil
}

// Kubeconfig returns an admin kubeconfig for the API server, reached at server when it is
// not empty (a forwarded address, say).
func (e *Env) Kubeconfig(server string) ([]byte, error) {
	user, err := e.env.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	data, err := user.KubeConfig()
	if err != nil || server == "" {
		return data, err
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	return clientcmd.Write(*cfg)
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error { return e.env.Stop() }

// Binary builds the l4lb binary into dir, for tests that run it as users do.
func Binary(dir string) (string, error) {
	bin := filepath.Join(dir, "l4lb")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = Root()
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// KubeconfigFile writes an admin kubeconfig for the API server into dir and returns its path.
func (e *Env) KubeconfigFile(dir string) (string, error) {
	data, err := e.Kubeconfig("")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// APIServerPID finds the kube-apiserver process of this Env (by its secure port), for tests
// that pause it with SIGSTOP as an etcd stall or a control-plane upgrade would.
func (e *Env) APIServerPID() (int, error) {
	u, err := url.Parse(e.Config.Host)
	if err != nil {
		return 0, err
	}
	want := "--secure-port=" + u.Port()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "kube-apiserver" || !slices.Contains(args, want) {
			continue
		}
		return strconv.Atoi(filepath.Base(filepath.Dir(p)))
	}
	return 0, fmt.Errorf("no kube-apiserver process with %s", want)
}

// Documents splits a YAML stream (rendered manifests) into its objects, leaving out empty
// documents.
func Documents(manifests []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
