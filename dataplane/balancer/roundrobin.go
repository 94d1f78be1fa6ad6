package balancer

import (
	"net/netip"
	"sync/atomic"
)

// roundRobin is smooth weighted round robin (as nginx and HAProxy do it): weights 3:1 give
// a a b a, not a a a b. The whole cycle is computed once, so a pick is one atomic add.
type roundRobin struct {
	seq  []int32
	next atomic.Uint64
}

func newRoundRobin(members []Member) *roundRobin {
	return &roundRobin{seq: RoundRobinCycle(members)}
}

// RoundRobinCycle is one turn of smooth weighted round robin over members, as indexes: the
// kernel path walks the same turn.
func RoundRobinCycle(members []Member) []int32 {
	w := make([]int, len(members))
	g := 0
	for i, m := range members {
		w[i] = max(m.Weight, 1)
		g = gcd(g, w[i])
	}
	total := 0
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	current := make([]int, len(w))
	seq := make([]int32, 0, total)
	for range total {
		best := 0
		for i := range w {
			current[i] += w[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		seq = append(seq, int32(best))
	}
	return seq
}

func (r *roundRobin) Pick(netip.AddrPort) int {
	n := r.next.Add(1) - 1
	return int(r.seq[n%uint64(len(r.seq))])
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
