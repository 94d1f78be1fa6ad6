package nodes

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	return s
}

// tieBreakers are the TieBreaks of nodes, on one API server (c) and one clock.
func tieBreakers(c client.Client, clock func() time.Time, nodes ...string) map[string]*TieBreak {
	tb := map[string]*TieBreak{}
	for _, n := range nodes {
		tb[n] = &TieBreak{Client: c, Reader: c, Namespace: "l4lb-system", Node: n, Now: clock}
	}
	return tb
}

// TestTieBreakHasOneWinningHalf: two halves of four nodes, both reaching the API server, ask
// for the tie-break at once: one half wins, the other does not, at every step; when the
// winner's half goes quiet, the other half takes over only after the winner's claim ran out on
// every clock; when the tie is over, the Lease is let go. The same with the winner's clock
// stepped 30 s ahead or behind the others' (the clock step): it writes renewal times
// 30 s off, which a rule reading them would take for a claim 30 s stale (two winners at
// once) or good for 30 s more (nobody wins after it goes); each node judges a claim on its own
// clock from when it saw it renewed, so nothing changes. (A step of a node's own clock does not
// change the durations it measures: Go's time.Now carries the monotonic clock, which stepping
// the wall clock does not move.)
func TestTieBreakHasOneWinningHalf(t *testing.T) {
	for _, skew := range []time.Duration{0, 30 * time.Second, -30 * time.Second} {
		t.Run(fmt.Sprintf("a's clock %v off", skew), func(t *testing.T) { oneWinningHalf(t, skew) })
	}
}

func oneWinningHalf(t *testing.T, skew time.Duration) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).Build()
	now := time.Unix(1000, 0)
	tb := tieBreakers(c, func() time.Time { return now }, "a", "b", "c", "d")
	tb["a"].Now = func() time.Time { return now.Add(skew) }
	left, right := []string{"a", "b"}, []string{"c", "d"}
	halfOf := map[string][]string{"a": left, "b": left, "c": right, "d": right}
	ctx := context.Background()
	winners := func(nodes ...string) map[string]bool {
		out := map[string]bool{}
		for _, n := range nodes {
			if tb[n].Won(halfOf[n]) {
				out[n] = true
			}
		}
		return out
	}
	step := func(nodes ...string) {
		for _, n := range nodes {
			tb[n].Step(ctx)
		}
	}

	winners("a", "b", "c", "d") // the tie begins: every node asks
	var won map[string]bool
	for i := 0; i < 8; i++ {
		step("a", "c", "b", "d")
		now = now.Add(DefaultTieDuration / 4)
		won = winners("a", "b", "c", "d")
		if (won["a"] || won["b"]) && (won["c"] || won["d"]) {
			t.Fatalf("step %d: both halves won the tie: %v", i, won)
		}
	}
	if !won["a"] || !won["b"] || won["c"] || won["d"] {
		t.Fatalf("the first to ask (a) and its half should hold the tie: %v", won)
	}

	// a's half goes quiet (cut from the API server, or gone): c's half waits out the claim.
	tookOver := time.Time{}
	cut := now
	for i := 0; i < 16 && tookOver.IsZero(); i++ {
		step("c", "d")
		now = now.Add(DefaultTieDuration / 4)
		won = winners("a", "b", "c", "d")
		if (won["a"] || won["b"]) && (won["c"] || won["d"]) {
			t.Fatalf("after %v: both halves won the tie: %v", now.Sub(cut), won)
		}
		if won["c"] {
			tookOver = now
		}
	}
	if tookOver.IsZero() {
		t.Fatal("the other half never took the tie over")
	}
	if d := tookOver.Sub(cut); d < DefaultTieDuration {
		t.Fatalf("taken over %v after the holder went quiet; its claim lasts %v", d, DefaultTieDuration)
	}

	// The tie is over for c's half (no one asks): c lets the Lease go at its next step.
	now = now.Add(DefaultTieDuration)
	step("c")
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: "l4lb-system", Name: TieLease}, &l); err != nil || l.Spec.HolderIdentity != nil {
		t.Fatalf("after the tie the Lease is %+v (%v); want no holder", l.Spec, err)
	}
}

// TestAClaimSeenInAnEarlierTieDoesNotCount is the partition matrix's 2|2 sequence: in a first
// tie, a reads c's claim; the tie ends and c lets the Lease go; in the next tie a and c are one
// half, a cut off from the API server, and b's half takes the released Lease. Before the fix, a
// counted c's old claim for its renewal deadline and both halves held VIPs.
func TestAClaimSeenInAnEarlierTieDoesNotCount(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).Build()
	now := time.Unix(1000, 0)
	tb := tieBreakers(c, func() time.Time { return now }, "a", "b", "c", "d")
	ctx := context.Background()
	tick := func(half []string, stepping ...string) {
		for _, n := range half {
			tb[n].Won(half)
		}
		now = now.Add(headStart) // no node holds a VIP here: each leaves the Lease free that long
		for _, n := range stepping {
			tb[n].Step(ctx)
		}
		now = now.Add(DefaultTieDuration/4 - headStart)
	}
	// First tie, c d | a b, everyone reaching the API server: c wins, a reads c's renewals.
	for range 4 {
		tick([]string{"c", "d"}, "c", "d")
		tick([]string{"a", "b"}, "a", "b")
	}
	if !tb["c"].Won([]string{"c", "d"}) || tb["a"].Won([]string{"a", "b"}) {
		t.Fatal("first tie: c's half should hold it")
	}
	// The tie ends for everyone: for half a period each node still reads the Lease (c renews
	// it meanwhile, a sees that), then c lets it go, which a, no longer reading, does not see.
	for range 5 {
		now = now.Add(DefaultTieDuration / 10)
		tb["c"].Step(ctx)
		tb["a"].Step(ctx)
	}
	now = now.Add(DefaultTieDuration / 10)
	tb["c"].Step(ctx)
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: "l4lb-system", Name: TieLease}, &l); err != nil || l.Spec.HolderIdentity != nil {
		t.Fatalf("after the first tie the Lease is %+v (%v); want it let go", l.Spec, err)
	}
	// A second tie, a c | b d, a cut off from the API server (it never steps): b's half takes
	// the free Lease at once.
	for i := range 6 {
		tick([]string{"b", "d"}, "b", "d")
		a, b := tb["a"].Won([]string{"a", "c"}), tb["b"].Won([]string{"b", "d"})
		if a && b {
			t.Fatalf("step %d of the second tie: both halves won (a by c's claim of the first tie)", i)
		}
		if i == 5 && !b {
			t.Fatal("b's half, reaching the free Lease, should hold the second tie")
		}
	}
}

// staleOnce answers its first Get with NotFound, as a read made just before another node
// created the object would; then it reads through.
type staleOnce struct {
	client.Reader
	done bool
}

func (s *staleOnce) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if !s.done {
		s.done = true
		return apierrors.NewNotFound(coordinationv1.Resource("leases"), key.Name)
	}
	return s.Reader.Get(ctx, key, obj, opts...)
}

// TestAPartnersClaimCountsAtOnce: two nodes of one half contend for the tie-break at the same
// moment; the one that loses the race reads the winner's claim back at once and holds its VIPs
// with it, rather than a renewal period later.
func TestAPartnersClaimCountsAtOnce(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).Build()
	now := time.Unix(1000, 0)
	tb := tieBreakers(c, func() time.Time { return now }, "a", "b")
	tb["b"].Reader = &staleOnce{Reader: c}
	half := []string{"a", "b"}
	tb["a"].Won(half)
	tb["b"].Won(half)        // the tie begins for both
	now = now.Add(headStart) // neither holds a VIP: both wait for the nodes that do
	ctx := context.Background()
	tb["a"].Step(ctx) // a creates the Lease
	tb["b"].Step(ctx) // b read before that: its create fails
	if !tb["a"].Won(half) {
		t.Fatal("a, which holds the Lease, does not win")
	}
	if !tb["b"].Won(half) {
		t.Fatal("b lost the race to its own half's partner and does not count a's claim yet")
	}
}
