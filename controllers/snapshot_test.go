package controllers

import (
	"context"
	"slices"
	"testing"

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

func testPool(name, listener string) *lbv1.Pool {
	return &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name},
		Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: listener}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin}}
}

func testListener(name, lb string, port int32) *lbv1.Listener {
	return &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: lb}, Protocol: lbv1.ListenerTCP, ProtocolPort: port}}
}

// build runs one build of s, and returns what it queued by kind, sorted.
func build(t *testing.T, s *snapshot, c client.Reader) map[string][]string {
	t.Helper()
	queue, err := s.build(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, ref := range queue {
		out[ref.Kind] = append(out[ref.Kind], ref.Namespace+"/"+ref.Name)
	}
	for _, q := range out {
		slices.Sort(q)
	}
	return out
}

func TestTheModelIsBuiltAgainOnlyWhenItsInputChanges(t *testing.T) {
	ctx := context.Background()
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb", Generation: 1}}
	l := testListener("l", "lb", 80)
	c := fake.NewClientBuilder().WithScheme(manager.NewScheme()).WithObjects(lb, l).Build()
	r := &countingReader{Reader: c}
	s := newSnapshot()
	changed := s.changed()
	read := func(what string, want bool) {
		t.Helper()
		before := r.lists
		build(t, s, r)
		if got := r.lists > before; got != want {
			t.Fatalf("%s: read the objects again: %v, want %v", what, got, want)
		}
	}
	read("first", true)
	read("nothing changed", false)

	// The agent writes a status: not the model's input.
	cur := lb.DeepCopy()
	cur.Status.OperatingStatus = lbv1.OperatingOnline
	changed.Update(event.UpdateEvent{ObjectOld: lb, ObjectNew: cur})
	read("a status the agent writes", false)

	cur = lb.DeepCopy()
	cur.Generation = 2
	changed.Update(event.UpdateEvent{ObjectOld: lb, ObjectNew: cur})
	read("a spec change", true)
	read("nothing changed since", false)

	// A reconciliation gets the model only if it was built from its object as it is now.
	var got lbv1.Listener
	if err := c.Get(ctx, client.ObjectKeyFromObject(l), &got); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.get(&got, "Listener"); !ok {
		t.Fatal("the model built from the listener as it is is not given to its reconciliation")
	}
	got.Generation++
	if _, _, ok := s.get(&got, "Listener"); ok {
		t.Fatal("a model built from an older spec of the listener is given to its reconciliation")
	}
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	changed.Update(event.UpdateEvent{ObjectOld: l, ObjectNew: &got})
	if q := build(t, s, r); !slices.Contains(q["Listener"], "a/l") {
		t.Fatalf("the listener that waited for the next build is not queued by it: %v", q)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(l), &got); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.get(&got, "Listener"); !ok {
		t.Fatal("the next build did not read the listener as it is")
	}
}

func TestABuildQueuesTheObjectsWhoseVerdictChanged(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(manager.NewScheme()).WithObjects(
		&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb1"}},
		testListener("l1", "lb1", 80), testPool("p1", "l1"),
		testListener("l2", "lb2", 80), testPool("p2", "l2")).Build()
	s := newSnapshot()
	step := func(what string, want map[string][]string) {
		t.Helper()
		s.count()
		got := build(t, s, c)
		for _, kind := range []string{"Listener", "Pool", "HealthMonitor"} {
			if !slices.Equal(got[kind], want[kind]) {
				t.Errorf("%s: queued %s %v, want %v", what, kind, got[kind], want[kind])
			}
		}
	}
	step("the first build", map[string][]string{"Listener": {"a/l1", "a/l2"}, "Pool": {"a/p1", "a/p2"}})
	step("nothing changed", nil)

	// lb2 appears: l2 is accepted now (and its pool with it); l1 and p1 are not concerned.
	if err := c.Create(ctx, &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb2"}}); err != nil {
		t.Fatal(err)
	}
	step("lb2 created", map[string][]string{"Listener": {"a/l2"}, "Pool": {"a/p2"}})

	// lb1 disabled: its listener's status changes (OFFLINE), nothing else.
	var lb1 lbv1.LoadBalancer
	if err := c.Get(ctx, client.ObjectKey{Namespace: "a", Name: "lb1"}, &lb1); err != nil {
		t.Fatal(err)
	}
	lb1.Spec.AdminStateUp = new(false)
	if err := c.Update(ctx, &lb1); err != nil {
		t.Fatal(err)
	}
	step("lb1 disabled", map[string][]string{"Listener": {"a/l1"}})
}
