// Package nodes tells which dataplane nodes are alive and which of them holds each VIP.
//
// Liveness comes from the nodes themselves, by gossip (hashicorp/memberlist, as MetalLB's
// speakers use): the control plane is not in the data path, so an API server that stalls or
// restarts moves no VIP. The API server only says which nodes run the dataplane and where to
// reach them (one Lease per node, renewed at kubelet's pace). Every agent ranks the live nodes
// for each VIP the same way (rendezvous hashing), so VIPs spread over the nodes without one
// election per VIP: the first holds it, the second stands by.
package nodes

import (
	"slices"
)

// Ranked orders the live nodes for vip, best first: the highest rendezvous hash of
// (vip, node), draining nodes after all the others. Every agent computes the same.
func Ranked(vip string, live []string, draining map[string]bool) []string {
	type scored struct {
		node     string
		draining bool
		score    uint64
	}
	s := make([]scored, 0, len(live))
	for _, n := range live {
		s = append(s, scored{n, draining[n], mix(fnv1a(vip, "/", n))})
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.draining != b.draining:
			if a.draining {
				return 1
			}
			return -1
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return 0
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].node
	}
	return out
}

// fnv1a is the 64-bit FNV-1a hash (hash/fnv's New64a) of the strings one after the other,
// without hash/fnv's allocations: every agent ranks every VIP at each ownership tick.
func fnv1a(parts ...string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			h ^= uint64(p[i])
			h *= prime
		}
	}
	return h
}

// Holder is the node that holds vip among the live nodes: the first of Ranked ("" when none).
func Holder(vip string, live []string, draining map[string]bool) string {
	if r := Ranked(vip, live, draining); len(r) > 0 {
		return r[0]
	}
	return ""
}

// mix spreads FNV's output, whose high bits barely change for similar inputs.
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
