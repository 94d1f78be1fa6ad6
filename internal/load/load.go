// Package load reads what the model is built from (internal/model's Objects): the l4lb
// objects of some namespaces and the cluster's address policy, from the API server or a
// cache. The controller, the dataplane agent and the Octavia API all read through it, so all
// three see the same input.
package load

import (
	"context"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
)

// Objects lists the four l4lb kinds in namespaces (every namespace when none is given),
// without the policy.
func Objects(ctx context.Context, c client.Reader, namespaces ...string) (model.Objects, error) {
	var objs model.Objects
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	for _, ns := range namespaces {
		var (
			lbs lbv1.LoadBalancerList
			ls  lbv1.ListenerList
			ps  lbv1.PoolList
			ms  lbv1.HealthMonitorList
		)
		for _, l := range []client.ObjectList{&lbs, &ls, &ps, &ms} {
			if err := c.List(ctx, l, client.InNamespace(ns)); err != nil {
				return model.Objects{}, err
			}
		}
		// (appended to nothing, a list's items are taken as they are rather than copied again)
		objs.LoadBalancers = appendItems(objs.LoadBalancers, lbs.Items)
		objs.Listeners = appendItems(objs.Listeners, ls.Items)
		objs.Pools = appendItems(objs.Pools, ps.Items)
		objs.Monitors = appendItems(objs.Monitors, ms.Items)
	}
	return objs, nil
}

func appendItems[T any](to, items []T) []T {
	if to == nil {
		return items
	}
	return append(to, items...)
}

// Input is the whole input of a model: the objects of every namespace and the policy.
func Input(ctx context.Context, c client.Reader) (model.Objects, error) {
	objs, err := Objects(ctx, c)
	if err != nil {
		return objs, err
	}
	objs.Policy, err = Policy(ctx, c)
	return objs, err
}

// Policy lists what the address policy is made of (the callers hold the RBAC:
// addresspolicies, nodes and networking.k8s.io servicecidrs, get, list and watch). A cluster
// without the ServiceCIDR API (before Kubernetes 1.33) has its Service range reserved by no
// rule here; its nodes and policies still apply.
func Policy(ctx context.Context, c client.Reader) (model.Policy, error) {
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

// InputChanged reports whether an update changes what internal/model reads of an object:
// its spec (the generation), labels, annotations and deletion, a load balancer's VIP, whether
// an object is Accepted (the older accepted object keeps a contested port), a node's addresses
// and pod ranges. The statuses the agents write (Programmed, operating statuses, members)
// change nothing in it, and are most of the updates.
func InputChanged(old, cur client.Object) bool {
	if old.GetGeneration() != cur.GetGeneration() || old.GetDeletionTimestamp().IsZero() != cur.GetDeletionTimestamp().IsZero() ||
		!maps.Equal(old.GetLabels(), cur.GetLabels()) || !maps.Equal(old.GetAnnotations(), cur.GetAnnotations()) {
		return true
	}
	switch o := old.(type) {
	case *lbv1.LoadBalancer:
		c := cur.(*lbv1.LoadBalancer)
		return o.Status.VIPAddress != c.Status.VIPAddress || acceptedChanged(o.Status.Conditions, c.Status.Conditions)
	case *lbv1.Listener:
		return acceptedChanged(o.Status.Conditions, cur.(*lbv1.Listener).Status.Conditions)
	case *lbv1.Pool:
		return acceptedChanged(o.Status.Conditions, cur.(*lbv1.Pool).Status.Conditions)
	case *lbv1.HealthMonitor:
		return acceptedChanged(o.Status.Conditions, cur.(*lbv1.HealthMonitor).Status.Conditions)
	case *corev1.Node:
		c := cur.(*corev1.Node)
		return !equality.Semantic.DeepEqual(o.Status.Addresses, c.Status.Addresses) || !slices.Equal(o.Spec.PodCIDRs, c.Spec.PodCIDRs)
	}
	return false
}

func acceptedChanged(old, cur []metav1.Condition) bool {
	return meta.IsStatusConditionTrue(old, lbv1.ConditionAccepted) != meta.IsStatusConditionTrue(cur, lbv1.ConditionAccepted)
}
