package octavia

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// A client's update that meets a version written since it was read (the controller adding
// its finalizer right after a create, as CI once saw) is applied again to the newer version,
// keeping the controller's write, instead of answering 409.
func TestUpdateAppliedAgainOnConflict(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := lbv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stored := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "p", Name: "lb"}}
	conflicts := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(stored).WithInterceptorFuncs(interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			if conflicts == 0 { // the controller writes first
				conflicts++
				other := &lbv1.LoadBalancer{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(o), other); err != nil {
					return err
				}
				other.Finalizers = []string{"lb.l4lb.io/controller"}
				if err := c.Update(ctx, other); err != nil {
					return err
				}
				return apierrors.NewConflict(schema.GroupResource{Group: "lb.l4lb.io", Resource: "loadbalancers"}, o.GetName(), nil)
			}
			return c.Update(ctx, o, opts...)
		},
	}).Build()
	s := &Server{Client: c}

	lb := &lbv1.LoadBalancer{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(stored), lb); err != nil {
		t.Fatal(err)
	}
	err := s.retryOnConflict(ctx, lb, func() error {
		lb.Spec.Description = "changed"
		return nil
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	got := &lbv1.LoadBalancer{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(stored), got); err != nil {
		t.Fatal(err)
	}
	if conflicts != 1 || got.Spec.Description != "changed" || len(got.Finalizers) != 1 {
		t.Fatalf("after %d conflicts: description %q, finalizers %v", conflicts, got.Spec.Description, got.Finalizers)
	}
}
