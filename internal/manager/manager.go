// Package manager holds what the three commands (the controller, the dataplane agent and the
// Octavia API) set up alike around controller-runtime: the scheme, the metrics endpoint and
// the readiness of the informers.
package manager

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// NewScheme knows the built-in kinds, the l4lb kinds and the Gateway API's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := lbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	// The Gateway API's kinds (the cluster's CRDs, when installed: controllers/gateway).
	if err := gatewayv1.Install(s); err != nil {
		panic(err)
	}
	return s
}

// Metrics serves metrics on addr; secure, behind Kubernetes authentication and authorisation
// (a TokenReview and a SubjectAccessReview per scrape, cached), over TLS with a self-signed
// certificate, as kubebuilder's scaffold does: the metrics name every tenant's listeners and
// members. Both roles carry the tokenreviews and subjectaccessreviews it needs.
func Metrics(addr string, secure bool) metricsserver.Options {
	if !secure {
		return metricsserver.Options{BindAddress: addr}
	}
	return metricsserver.Options{BindAddress: addr, SecureServing: true, FilterProvider: filters.WithAuthenticationAndAuthorization}
}

// InformersSynced is a readiness check: the informers have listed everything once, so what
// the process decides is based on the whole state.
func InformersSynced(mgr ctrl.Manager) healthz.Checker {
	return func(r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return fmt.Errorf("informers not synced")
		}
		return nil
	}
}
