package neutron

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/internal/openstack"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// New returns the provider of a controller manager: credentials from the Secret (read
// directly, so the controller does not cache every Secret of the cluster), nodes from the
// cache, events through the manager's recorder.
func New(mgr ctrl.Manager, secret client.ObjectKey, cloud, clusterID string) *Provider {
	rec := mgr.GetEventRecorder("l4lb-controller")
	return &Provider{
		ClusterID: clusterID,
		Credentials: func(ctx context.Context) (openstack.Credentials, error) {
			var s corev1.Secret
			if err := mgr.GetAPIReader().Get(ctx, secret, &s); err != nil {
				return openstack.Credentials{}, secretError(secret, err)
			}
			return openstack.FromSecret(s.Data, cloud)
		},
		Nodes: func(ctx context.Context) ([]corev1.Node, error) {
			var nodes corev1.NodeList
			err := mgr.GetClient().List(ctx, &nodes)
			return nodes.Items, err
		},
		Pools: func(ctx context.Context, namespace string) ([]ipam.Pool, []lbv1.VIPPool, error) {
			return ipam.ReadPools(ctx, mgr.GetClient(), namespace)
		},
		Project: func(ctx context.Context, namespace string) (string, error) {
			var ns corev1.Namespace
			err := mgr.GetClient().Get(ctx, client.ObjectKey{Name: namespace}, &ns)
			return ns.Labels[lbv1.ProjectLabel], err
		},
		Record: func(lb *lbv1.LoadBalancer, warning bool, reason, msg string) {
			typ := "Normal"
			if warning {
				typ = "Warning"
			}
			rec.Eventf(lb, nil, typ, reason, "OpenStack", "%s", msg)
		},
	}
}

// secretError classifies a failure to read the credentials Secret: absent or forbidden is for
// the administrator to fix (CredentialsRefused); anything else (the API server unreachable,
// slow or failing) passes by itself, and is retried as a cloud outage is (ProviderUnavailable).
func secretError(secret client.ObjectKey, err error) error {
	err = fmt.Errorf("secret %s: %w", secret, err)
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return err
	}
	return &ipam.Error{Reason: lbv1.ReasonProviderUnavailable, Err: err}
}
