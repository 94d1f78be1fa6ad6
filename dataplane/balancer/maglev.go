package balancer

import (
	"net/netip"
	"slices"
)

// DefaultTableSize is the Maglev lookup table size: a prime well above 100 x the members of a
// large pool, so each member's share stays within a percent of its weight.
const DefaultTableSize = 65537

// Maglev is Google's Maglev consistent hashing with weights (as Envoy does it): every node
// builds the same table from the same members whatever their order, and removing a member
// moves only the clients that were on it (and few others).
type Maglev struct {
	table  []int32
	ipPort bool
}

// NewMaglev builds the table; size must be prime. With ipPort the client's port is hashed too
// (SOURCE_IP_PORT), otherwise only its address (SOURCE_IP).
func NewMaglev(members []Member, size int, ipPort bool) *Maglev {
	order := make([]int, len(members))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case members[a].Key < members[b].Key:
			return -1
		case members[a].Key > members[b].Key:
			return 1
		}
		return 0
	})
	m := uint64(size)
	offset := make([]uint64, len(members))
	skip := make([]uint64, len(members))
	next := make([]uint64, len(members))
	count := make([]float64, len(members))
	weight := make([]float64, len(members))
	maxW := 1
	for _, mem := range members {
		maxW = max(maxW, mem.Weight)
	}
	for k, i := range order {
		h := fnv64(members[i].Key, 0)
		offset[k] = h % m
		skip[k] = fnv64(members[i].Key, 0x9e3779b97f4a7c15)%(m-1) + 1
		weight[k] = float64(max(members[i].Weight, 1)) / float64(maxW)
	}
	table := make([]int32, size)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for iteration := 0; filled < size; iteration++ {
		for k, i := range order {
			// A member of half the largest weight claims a slot every other round.
			if float64(iteration)*weight[k] < count[k] {
				continue
			}
			for {
				slot := (offset[k] + next[k]*skip[k]) % m
				next[k]++
				if table[slot] < 0 {
					table[slot] = int32(i)
					break
				}
			}
			count[k]++
			filled++
			if filled == size {
				break
			}
		}
	}
	return &Maglev{table: table, ipPort: ipPort}
}

// Table is the lookup table: slot to member index. The kernel path hashes into the same table.
func (g *Maglev) Table() []int32 { return g.table }

// Pick hashes the client's address (and port) into the table.
func (g *Maglev) Pick(src netip.AddrPort) int {
	a := src.Addr().Unmap().As16()
	h := uint64(14695981039346656037)
	for _, b := range a {
		h = (h ^ uint64(b)) * 1099511628211
	}
	if g.ipPort {
		p := src.Port()
		h = (h ^ uint64(p>>8)) * 1099511628211
		h = (h ^ uint64(p&0xff)) * 1099511628211
	}
	return int(g.table[h%uint64(len(g.table))])
}

// fnv64 is FNV-1a with a seed; it is the same on every node, unlike hash/maphash.
func fnv64(s string, seed uint64) uint64 {
	h := uint64(14695981039346656037) ^ seed
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	// A final mix, since FNV's low bits are weak for similar keys like 10.0.0.1:80, 10.0.0.2:80.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}
