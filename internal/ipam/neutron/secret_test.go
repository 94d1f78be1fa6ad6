package neutron

import (
	"context"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/openstack"
)

// TestUnreadableSecretIsABlipOrASetupError: a credentials Secret that is missing or forbidden
// is for the administrator (CredentialsRefused, a load balancer without a VIP is ERROR); one
// that could not be read because the API server is down or slow is retried like a cloud
// outage (ProviderUnavailable, nothing turns ERROR).
func TestUnreadableSecretIsABlipOrASetupError(t *testing.T) {
	key := client.ObjectKey{Namespace: "l4lb-system", Name: "openstack-credentials"}
	secrets := schema.GroupResource{Resource: "secrets"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"missing", apierrors.NewNotFound(secrets, key.Name), lbv1.ReasonCredentialsRefused},
		{"forbidden", apierrors.NewForbidden(secrets, key.Name, errors.New("rbac")), lbv1.ReasonCredentialsRefused},
		{"API server timing out", apierrors.NewTimeoutError("etcd", 1), lbv1.ReasonProviderUnavailable},
		{"API server unreachable", errors.New("dial tcp 10.96.0.1:443: connect: connection refused"), lbv1.ReasonProviderUnavailable},
	} {
		p := &Provider{Credentials: func(context.Context) (openstack.Credentials, error) {
			return openstack.Credentials{}, secretError(key, tc.err)
		}}
		_, err := p.client(context.Background())
		if got := ipam.Reason(err, ""); got != tc.want {
			t.Errorf("%s: reason %q (%v), want %s", tc.name, got, err, tc.want)
		}
	}
}
