package nodes

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func nodeLease(node string, renewed time.Time) *coordinationv1.Lease {
	t := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: leaseName(node), Labels: map[string]string{Label: "true"},
			Annotations: map[string]string{AddressAnnotation: node + ":7946"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, RenewTime: &t},
	}
}

// A Lease that is not renewed keeps its node in the quorum's base (on the API server's side of
// a partition, the other side's Leases go stale while those nodes are alive); a deleted one
// takes it out.
func TestStaleLeasesStayListedDeletedOnesGo(t *testing.T) {
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	now := time.Now()
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(
		nodeLease("a", now), nodeLease("b", now.Add(-time.Hour)), nodeLease("c", now.Add(-time.Hour))).Build()
	r := &Registry{Namespace: "l4lb-system", Node: "a", Renew: 10 * time.Millisecond}
	ctx := context.Background()
	for range 3 {
		peers, listed, gone, err := r.Peers(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(listed)
		if !slices.Equal(listed, []string{"a", "b", "c"}) || len(gone) != 0 || len(peers) != 2 {
			t.Fatalf("listed %v, gone %v, peers %v: stale Leases must stay listed and joinable", listed, gone, peers)
		}
		time.Sleep(50 * time.Millisecond) // several renewal periods on this node's clock
	}
	if err := c.Delete(ctx, nodeLease("c", now)); err != nil {
		t.Fatal(err)
	}
	_, listed, gone, err := r.Peers(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(listed, "c") || !slices.Equal(gone, []string{"c"}) {
		t.Fatalf("after c's Lease was deleted: listed %v, gone %v", listed, gone)
	}
}

// A node that meets nobody (its gossip port blocked, another key) while the API server lists
// three dataplane nodes is one of three: not a majority.
func TestTheListedNodesAreTheQuorumBase(t *testing.T) {
	g := startMembers(t, 1, DefaultTiming, new(atomic.Int64))[0]
	if v := g.View(); !v.Quorate(nil) {
		t.Fatalf("a lone node nobody lists: %+v, want quorate", v)
	}
	g.SetListed([]string{"node-000", "other-1", "other-2"})
	v := g.View()
	if v.Known != 3 || v.Quorate(nil) || v.Quorate(func([]string) bool { return true }) {
		t.Fatalf("alone among three listed nodes: %+v, quorate %v; want known 3 and no quorum", v, v.Quorate(nil))
	}
	g.SetListed([]string{"node-000", "other-1"})
	if v := g.View(); v.Known != 2 || !v.Quorate(func([]string) bool { return true }) || v.Quorate(func([]string) bool { return false }) {
		t.Fatalf("one of two listed: %+v; the tie goes to the witness", v)
	}
}
