// Package owned writes the l4lb objects another object controls: a Service's or a Gateway's
// load balancer, listeners, pools and monitors. They are applied by server-side apply under one
// field manager (a user's kubectl edit of another field stays), controlled by their owner (the
// garbage collector deletes them with it), labelled with it, and pruned when the owner no
// longer asks for them. An object of the same name that the owner does not control is never
// taken over.
package owned

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Objects are what an owner is served by.
type Objects struct {
	LoadBalancer lbv1.LoadBalancer
	Listeners    []lbv1.Listener
	Pools        []lbv1.Pool
	Monitors     []lbv1.HealthMonitor
}

// All lists them in the order they are made (deleted in reverse).
func (o *Objects) All() []client.Object {
	out := []client.Object{&o.LoadBalancer}
	for i := range o.Listeners {
		out = append(out, &o.Listeners[i])
	}
	for i := range o.Pools {
		out = append(out, &o.Pools[i])
	}
	for i := range o.Monitors {
		out = append(out, &o.Monitors[i])
	}
	return out
}

// Refusal is what the owner asks that cannot be done as asked (an invalid value, a name
// taken): said on the owner, not retried until something changes.
type Refusal struct {
	Reason string
	Err    error
}

func (e *Refusal) Error() string { return e.Err.Error() }

// Writer applies the objects of owners of one kind.
type Writer struct {
	Client client.Client
	// FieldManager owns the fields it applies.
	FieldManager string
	// Label names, on each object, its owner (the value is the owner's name).
	Label string
	// Owner is the owner's kind.
	Owner schema.GroupVersionKind
}

var kinds = []struct {
	kind string
	list func() client.ObjectList
}{
	{"LoadBalancer", func() client.ObjectList { return &lbv1.LoadBalancerList{} }},
	{"Listener", func() client.ObjectList { return &lbv1.ListenerList{} }},
	{"Pool", func() client.ObjectList { return &lbv1.PoolList{} }},
	{"HealthMonitor", func() client.ObjectList { return &lbv1.HealthMonitorList{} }},
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *lbv1.LoadBalancer:
		return "LoadBalancer"
	case *lbv1.Listener:
		return "Listener"
	case *lbv1.Pool:
		return "Pool"
	default:
		return "HealthMonitor"
	}
}

// Apply writes objs, controlled by owner, and deletes what owner controls that objs no longer
// hold.
func (w *Writer) Apply(ctx context.Context, owner client.Object, objs Objects) error {
	ref := metav1.NewControllerRef(owner, w.Owner)
	ref.BlockOwnerDeletion = nil // needs update on the owner's finalizers, which l4lb does not hold
	want := map[string]bool{}
	for _, o := range objs.All() {
		kind := kindOf(o)
		want[kind+"/"+o.GetName()] = true
		existing := o.DeepCopyObject().(client.Object)
		err := w.Client.Get(ctx, client.ObjectKeyFromObject(o), existing)
		if err == nil && !metav1.IsControlledBy(existing, owner) {
			return &Refusal{"NameTaken", fmt.Errorf("%s %s/%s exists and is not this %s's: l4lb does not take it over", kind, o.GetNamespace(), o.GetName(), w.Owner.Kind)}
		}
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[w.Label] = owner.GetName()
		o.SetLabels(labels)
		o.SetOwnerReferences([]metav1.OwnerReference{*ref})
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		obj := &unstructured.Unstructured{Object: u}
		obj.SetGroupVersionKind(lbv1.GroupVersion.WithKind(kind))
		if err := w.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(w.FieldManager), client.ForceOwnership); err != nil {
			if apierrors.IsInvalid(err) {
				return &Refusal{"Invalid", fmt.Errorf("%s %s: %w", kind, o.GetName(), err)}
			}
			return fmt.Errorf("applying %s %s: %w", kind, o.GetName(), err)
		}
	}
	return w.prune(ctx, owner, want)
}

// Release deletes everything owner controls.
func (w *Writer) Release(ctx context.Context, owner client.Object) error {
	return w.prune(ctx, owner, nil)
}

// prune deletes the objects owner controls that are not in want.
func (w *Writer) prune(ctx context.Context, owner client.Object, want map[string]bool) error {
	for i := len(kinds) - 1; i >= 0; i-- {
		l := kinds[i].list()
		if err := w.Client.List(ctx, l, client.InNamespace(owner.GetNamespace()), client.MatchingLabels{w.Label: owner.GetName()}); err != nil {
			return err
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return err
		}
		for _, item := range items {
			o := item.(client.Object)
			if !metav1.IsControlledBy(o, owner) || want[kinds[i].kind+"/"+o.GetName()] {
				continue
			}
			if err := w.Client.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	return nil
}
