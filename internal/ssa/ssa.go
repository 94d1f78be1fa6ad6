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
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Field managers.
const (
	ControllerManager = "l4lb-controller"
	DataplaneManager  = "l4lb-dataplane"
)

// ApplyStatus applies status (a struct of the api's status type holding only the caller's
// fields) to the object of kind in namespace/name. The body is marshalled once, and only the
// object's metadata is asked back: the whole object decoded for each of thousands of writes
// was a good part of what writing statuses cost the agent and the controller.
func ApplyStatus(ctx context.Context, c client.Client, kind, namespace, name, owner string, status any) error {
	gvk := lbv1.GroupVersion.WithKind(kind)
	body, err := json.Marshal(applied{APIVersion: gvk.GroupVersion().String(), Kind: kind,
		Metadata: appliedMeta{Name: name, Namespace: namespace}, Status: status})
	if err != nil {
		return err
	}
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(gvk)
	obj.SetNamespace(namespace)
	obj.SetName(name)
	return c.Status().Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(owner), client.ForceOwnership)
}

// applied is the body of a status apply.
type applied struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   appliedMeta `json:"metadata"`
	Status     any         `json:"status"`
}

type appliedMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
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
