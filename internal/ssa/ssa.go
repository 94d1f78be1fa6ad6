// Package ssa writes status with server-side apply. The controller and the dataplane agent
// both write parts of one status (the agent: Programmed and member health; the controller:
// the rest), so each applies only its own fields under its own field manager and neither
// overwrites the other.
package ssa

import (
	"context"
	"encoding/json"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Field managers.
const (
	ControllerManager = "l4lb-controller"
	DataplaneManager  = "l4lb-dataplane"
)

// ApplyStatus applies status (a struct of the api's status type holding only the caller's
// fields) to the object of kind in namespace/name.
func ApplyStatus(ctx context.Context, c client.Client, kind, namespace, name, owner string, status any) error {
	raw, err := json.Marshal(status)
	if err != nil {
		return err
	}
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": s}}
	u.SetGroupVersionKind(lbv1.GroupVersion.WithKind(kind))
	u.SetNamespace(namespace)
	u.SetName(name)
	return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(owner), client.ForceOwnership)
}

// Conditions returns ours with lastTransitionTime kept from existing where the status did not
// change, so a re-apply does not move the time of the last transition.
func Conditions(existing []metav1.Condition, ours ...metav1.Condition) []metav1.Condition {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	out := make([]metav1.Condition, 0, len(ours))
	for _, c := range ours {
		c.LastTransitionTime = now
		if old := meta.FindStatusCondition(existing, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out = append(out, c)
	}
	return out
}

// Changed reports whether applying ours would change what existing shows, ignoring times.
func Changed(existing []metav1.Condition, ours []metav1.Condition) bool {
	for _, c := range ours {
		old := meta.FindStatusCondition(existing, c.Type)
		if old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message || old.ObservedGeneration != c.ObservedGeneration {
			return true
		}
	}
	return false
}
