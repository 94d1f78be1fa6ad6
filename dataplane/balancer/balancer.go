// Package balancer holds Octavia's member-selection algorithms, one small type each. A
// Selector is built for a fixed set of eligible members (the proxy rebuilds it when health or
// configuration changes, off the data path) and picks without allocating.
package balancer

import (
	"net/netip"
	"sync/atomic"

	"github.com/l4lb/l4lb/internal/model"
)

// Member is what the algorithms need to know of one eligible member.
type Member struct {
	// Key identifies the member for consistent hashing (address:port), so every node builds
	// the same table whatever order the members come in.
	Key    string
	Weight int // 1-256; drained (0) members are not eligible
	// Active counts the member's open connections, for LEAST_CONNECTIONS.
	Active *atomic.Int64
}

// Selector picks a member for a new connection from src; the result indexes the members it
// was built with, or is -1 when there are none.
type Selector interface {
	Pick(src netip.AddrPort) int
}

// New builds the selector of an algorithm over members.
func New(alg model.Algorithm, members []Member) Selector {
	if len(members) == 0 {
		return none{}
	}
	switch alg {
	case model.LeastConnections:
		return newLeastConnections(members)
	case model.SourceIP:
		return NewMaglev(members, DefaultTableSize, false)
	case model.SourceIPPort:
		return NewMaglev(members, DefaultTableSize, true)
	default:
		return newRoundRobin(members)
	}
}

type none struct{}

func (none) Pick(netip.AddrPort) int { return -1 }
