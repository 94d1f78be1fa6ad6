// Package testenv starts a real kube-apiserver and etcd (envtest) with the l4lb CRDs
// installed, for the tests of every package that talks to Kubernetes.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
)

// Root is the repository's top folder.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme knows the built-in kinds and the l4lb kinds.
func Scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := lbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Codecs decodes l4lb YAML.
func Codecs() serializer.CodecFactory { return serializer.NewCodecFactory(Scheme()) }

// Env is a running API server with the CRDs installed.
type Env struct {
	env    *envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Start starts the API server. KUBEBUILDER_ASSETS, when unset, is found (or built once) by
// hack/envtest-assets.sh, so `go test ./...` works as well as `make test`.
func Start() (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		out, err := exec.Command(filepath.Join(Root(), "hack", "envtest-assets.sh")).Output()
		if err != nil {
			return nil, fmt.Errorf("finding kube-apiserver and etcd with hack/envtest-assets.sh: %w", err)
		}
		os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out)))
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(Root(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
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

// Stop stops the API server and etcd.
func (e *Env) Stop() error { return e.env.Stop() }
