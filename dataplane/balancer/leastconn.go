package balancer

import (
	"net/netip"
	"sync/atomic"
)

// leastConnections picks the member with the fewest open connections per unit of weight;
// ties go round robin so an idle pool still spreads.
type leastConnections struct {
	members []Member
	next    atomic.Uint64
}

func newLeastConnections(members []Member) *leastConnections {
	return &leastConnections{members: members}
}

func (l *leastConnections) Pick(netip.AddrPort) int {
	n := len(l.members)
	start := int(l.next.Add(1) % uint64(n))
	best := -1
	var bestActive, bestWeight int64
	for k := range n {
		i := (start + k) % n
		m := &l.members[i]
		a, w := m.Active.Load(), int64(max(m.Weight, 1))
		// a/w < bestActive/bestWeight, without division.
		if best < 0 || a*bestWeight < bestActive*w {
			best, bestActive, bestWeight = i, a, w
		}
	}
	return best
}
