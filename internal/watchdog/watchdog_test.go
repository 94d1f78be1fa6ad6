package watchdog

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func TestCheckFailsOnlyWhileAReconciliationOverruns(t *testing.T) {
	w := New(50 * time.Millisecond)
	release := make(chan struct{})
	r := w.Wrap("test", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		<-release
		return reconcile.Result{}, nil
	}))
	done := make(chan struct{})
	go func() { r.Reconcile(context.Background(), reconcile.Request{}); close(done) }()
	if err := w.Check(nil); err != nil {
		t.Fatalf("a reconciliation that just began fails the check: %v", err)
	}
	for w.Check(nil) == nil {
		time.Sleep(10 * time.Millisecond) // a stuck one fails it once past the limit
	}
	close(release)
	<-done
	if err := w.Check(nil); err != nil {
		t.Fatalf("the check still fails after the reconciliation ended: %v", err)
	}
}
