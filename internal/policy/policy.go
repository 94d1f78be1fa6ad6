// Package policy reads a cluster's address policy (AddressPolicies, nodes, Service CIDRs) for
// the controller and the dataplane agent alike, so both build the model under the same rules.
package policy

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
)

// Load lists what the policy is made of (the callers hold the RBAC: addresspolicies, nodes
// and networking.k8s.io servicecidrs, get, list and watch). A cluster without the ServiceCIDR API (before
// Kubernetes 1.33) has its Service range reserved by no rule here; its nodes and policies
// still apply.
func Load(ctx context.Context, c client.Reader) (model.Policy, error) {
	var (
		aps   lbv1.AddressPolicyList
		nodes corev1.NodeList
		scs   networkingv1.ServiceCIDRList
	)
	if err := c.List(ctx, &aps); err != nil {
		return model.Policy{}, err
	}
	if err := c.List(ctx, &nodes); err != nil {
		return model.Policy{}, err
	}
	if err := c.List(ctx, &scs); err != nil && !meta.IsNoMatchError(err) {
		return model.Policy{}, err
	}
	return model.PolicyFor(aps.Items, nodes.Items, scs.Items), nil
}
