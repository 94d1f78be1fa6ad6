package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/manager"
)

// countingReader counts the lists a snapshot makes.
type countingReader struct {
	client.Reader
	lists int
}

func (c *countingReader) List(ctx context.Context, l client.ObjectList, opts ...client.ListOption) error {
	c.lists++
	return c.Reader.List(ctx, l, opts...)
}

func TestTheModelIsBuiltAgainOnlyWhenItsInputChanges(t *testing.T) {
	ctx := context.Background()
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb", Generation: 1}}
	c := fake.NewClientBuilder().WithScheme(manager.NewScheme()).WithObjects(lb).Build()
	r := &countingReader{Reader: c}
	s := &snapshot{}
	changed := s.changed()
	get := func(what string, wantRead bool) (listeners int) {
		t.Helper()
		before := r.lists
		if !s.built.IsZero() {
			s.built = s.built.Add(-rebuildEvery) // as if the last build were that long ago
		}
		objs, _, err := s.get(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if read := r.lists > before; read != wantRead {
			t.Fatalf("%s: read the objects again: %v, want %v", what, read, wantRead)
		}
		return len(objs.Listeners)
	}
	get("first", true)
	get("nothing changed", false)

	// The agent writes a status: not the model's input.
	cur := lb.DeepCopy()
	cur.Status.OperatingStatus = lbv1.OperatingOnline
	changed.Update(event.UpdateEvent{ObjectOld: lb, ObjectNew: cur})
	get("a status the agent writes", false)

	// A listener is created: its event is counted before it is queued, and the model that
	// reconciliation gets has it.
	l := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "l"},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}}
	if err := c.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	changed.Create(event.CreateEvent{Object: l})
	if n := get("a listener created", true); n != 1 {
		t.Fatalf("the model has %d listeners, want 1", n)
	}

	cur = lb.DeepCopy()
	cur.Generation = 2
	changed.Update(event.UpdateEvent{ObjectOld: lb, ObjectNew: cur})
	get("a spec change", true)
	get("nothing changed since", false)

	// Changes right after a build wait for the next one, which comes rebuildEvery after it.
	s.built = time.Now()
	changed.Create(event.CreateEvent{Object: l})
	_, _, err := s.get(ctx, r)
	if w, ok := err.(modelPending); !ok || time.Duration(w) <= 0 || time.Duration(w) > rebuildEvery {
		t.Fatalf("a change right after a build: %v, want a wait of at most %v", err, rebuildEvery)
	}
	if res, err := afterModel(err); err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("the reconciliation is not tried again when the model is: %+v, %v", res, err)
	}
	get("the next build", true)
}
