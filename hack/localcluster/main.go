// Command localcluster runs a real kube-apiserver and etcd on loopback with the l4lb CRDs
// installed, writes an admin kubeconfig, and serves until interrupted. `make demo` uses it
// where there is no cluster: no kubelet is needed, since the controller and the dataplane
// agent run as processes beside it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/l4lb/l4lb/test/testenv"
)

func main() {
	kubeconfig := flag.String("write-kubeconfig", ".demo/kubeconfig", "where to write the admin kubeconfig")
	crds := flag.String("crds", "config/crd/bases", "folder of CRDs to install")
	flag.Parse()

	if err := testenv.SetAssets(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{*crds}, ErrorIfCRDPathMissing: true}
	if _, err := env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting the local control plane:", err)
		os.Exit(1)
	}
	code := serve(env, *kubeconfig)
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping:", err)
	}
	os.Exit(code)
}

func serve(env *envtest.Environment, kubeconfig string) int {
	user, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "adding the admin user:", err)
		return 1
	}
	data, err := user.KubeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "writing kubeconfig:", err)
		return 1
	}
	if err := os.MkdirAll(filepath.Dir(kubeconfig), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Written last and atomically: its presence tells callers the API server is ready.
	tmp := kubeconfig + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil || os.Rename(tmp, kubeconfig) != nil {
		fmt.Fprintln(os.Stderr, "writing kubeconfig:", err)
		return 1
	}
	fmt.Println("local control plane ready; kubeconfig:", kubeconfig)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	os.Remove(kubeconfig)
	return 0
}
