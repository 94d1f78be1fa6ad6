package octavia

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/manager"
	"github.com/l4lb/l4lb/internal/openstack"
)

// Command is `l4lb octavia-api`: it registers the API's flags and returns what serves it.
func Command() func() error {
	addr := flag.String("bind-address", ":9876", "address the API listens on (Octavia's port)")
	secret := flag.String("openstack-secret", "", "NAMESPACE/NAME of the Secret with the service's OpenStack credentials (clouds.yaml or OS_* keys), used to validate users' tokens")
	cloud := flag.String("openstack-cloud", "openstack", "the cloud of the Secret's clouds.yaml")
	cloudsFile := flag.String("clouds-yaml", "", "a clouds.yaml file instead of --openstack-secret (outside a cluster)")
	createNS := flag.Bool("create-namespaces", false, "make a namespace (openstack-<project ID>, labelled "+lbv1.ProjectLabel+") on a project's first write; false: an administrator labels one per project")
	keystoneRoles := flag.Bool("keystone-default-roles", false, "also grant Keystone's member and reader roles what load-balancer_member and load-balancer_observer have (Octavia's [oslo_policy] enforce_new_defaults); false: Octavia's default policy, its load-balancer_* roles only")
	tokenCache := flag.Duration("token-cache", openstack.DefaultTokenCache, "how long a validated Keystone token is trusted")
	tlsCert := flag.String("tls-cert-file", "", "serve HTTPS with this certificate (PEM, its chain after it), reloaded when the file changes (cert-manager's renewals); empty: plain HTTP, for a TLS-terminating Ingress or mesh in front")
	tlsKey := flag.String("tls-private-key-file", "", "the private key of --tls-cert-file (PEM)")
	reqTimeout := flag.Duration("request-timeout", DefaultRequestTimeout, "how long a request may wait on Keystone and the Kubernetes API before it is answered 503")
	agentsNS := flag.String("dataplane-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the dataplane agents, whose metrics answer the stats calls")
	agentsSel := flag.String("dataplane-selector", "app.kubernetes.io/component=dataplane", "labels of the dataplane agents' pods")
	agentsPort := flag.Int("dataplane-metrics-port", 10390, "port of the agents' metrics endpoint")
	agentsSecure := flag.Bool("dataplane-metrics-secure", true, "the agents serve metrics over HTTPS to clients Kubernetes authorises (the agents' --metrics-secure); this server sends its service account's token")
	return func() error {
		cfg := ctrl.GetConfigOrDie()
		c, err := client.New(cfg, client.Options{Scheme: manager.NewScheme()})
		if err != nil {
			return err
		}
		creds, err := openstack.ServiceCredentials(c, *secret, *cloudsFile, *cloud)
		if err != nil {
			return err
		}
		ks := &openstack.Keystone{Credentials: creds, CacheFor: *tokenCache}
		sel, err := labels.ConvertSelectorToLabelsMap(*agentsSel)
		if err != nil {
			return fmt.Errorf("--dataplane-selector: %w", err)
		}
		agents := &AgentMetrics{Client: c, Namespace: *agentsNS, Selector: sel, Port: *agentsPort}
		if *agentsSecure {
			agents.Token = bearerToken(cfg)
		}
		s := &Server{Client: c, Validate: ks.Validate, CreateNamespaces: *createNS, KeystoneDefaultRoles: *keystoneRoles, Stats: agents.Node, Agents: agents.Nodes,
			RequestTimeout: *reqTimeout, Log: slog.Default()}
		srv := &http.Server{Addr: *addr, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		go func() {
			<-ctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(shut)
		}()
		if (*tlsCert == "") != (*tlsKey == "") {
			return errors.New("--tls-cert-file and --tls-private-key-file go together")
		}
		serve, scheme := srv.ListenAndServe, "http"
		if *tlsCert != "" {
			certs, err := certwatcher.New(*tlsCert, *tlsKey)
			if err != nil {
				return err
			}
			go certs.Start(ctx)
			srv.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
			serve, scheme = func() error { return srv.ListenAndServeTLS("", "") }, "https"
		}
		slog.Info("serving the Octavia v2 API", "address", *addr, "scheme", scheme)
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// bearerToken is the token of this process's Kubernetes identity, read again on each call
// from the file a pod's service account token is mounted at (the kubelet rotates it).
func bearerToken(cfg *rest.Config) func() (string, error) {
	return func() (string, error) {
		if cfg.BearerTokenFile != "" {
			b, err := os.ReadFile(cfg.BearerTokenFile)
			return strings.TrimSpace(string(b)), err
		}
		if cfg.BearerToken != "" {
			return cfg.BearerToken, nil
		}
		return "", errors.New("this identity has no bearer token to show the dataplane agents' metrics endpoints (run in a pod, or give --dataplane-metrics-secure=false for agents serving plain HTTP)")
	}
}
