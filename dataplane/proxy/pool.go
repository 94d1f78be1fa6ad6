package proxy

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l4lb/l4lb/dataplane/balancer"
	"github.com/l4lb/l4lb/internal/model"
)

// member is the runtime of one pool member. It outlives reconfigurations that keep the
// member (same pool, name and address), so its connection count, health and metrics carry on;
// a removed member's open connections keep their pointer and drain.
type member struct {
	pool    string // the pool's key
	spec    model.Member
	up      atomic.Bool
	active  atomic.Int64
	metrics *memberMetrics
	next    atomic.Pointer[member] // the runtime that replaced this one when the member changed
}

func (m *member) eligible() bool { return m.spec.AdminStateUp && m.spec.Weight > 0 && m.up.Load() }

// current follows m to the member's runtime now: what holds m since before a change of the
// member (a UDP session) sees its health and flags from then on.
func (m *member) current() *member {
	for n := m.next.Load(); n != nil; n = m.next.Load() {
		m = n
	}
	return m
}

// choice is the set of members new connections may go to, with its selector. It is rebuilt
// whenever membership or health changes and swapped atomically.
type choice struct {
	members []*member
	sel     balancer.Selector
}

// pool is the runtime of one model.Pool.
type pool struct {
	spec    model.Pool
	members []*member
	choice  atomic.Pointer[choice]
	sticky  *stickyTable // SOURCE_IP session persistence; nil without
}

// newPool makes the runtime of spec. prev is the pool of that key before a reconfiguration,
// if any: its session persistence table carries over while the persistence settings stay,
// since the model is applied whole and any change anywhere would otherwise move every
// persistent client.
func newPool(spec model.Pool, members []*member, prev *pool) *pool {
	p := &pool{spec: spec, members: members}
	switch {
	case spec.Persistence == nil:
	case prev != nil && prev.sticky != nil && *prev.spec.Persistence == *spec.Persistence:
		p.sticky = prev.sticky.carry(members)
	default:
		p.sticky = newStickyTable(spec.Persistence)
	}
	p.rebuild()
	return p
}

// rebuild recomputes who may receive new connections: eligible primaries, or, when none is,
// eligible backups (Octavia's backup members).
func (p *pool) rebuild() {
	var primaries, backups []*member
	for _, m := range p.members {
		if !m.eligible() {
			continue
		}
		if m.spec.Backup {
			backups = append(backups, m)
		} else {
			primaries = append(primaries, m)
		}
	}
	set := primaries
	if len(set) == 0 {
		set = backups
	}
	bm := make([]balancer.Member, len(set))
	for i, m := range set {
		bm[i] = balancer.Member{Key: m.spec.Address.String(), Weight: m.spec.Weight, Active: &m.active}
	}
	p.choice.Store(&choice{members: set, sel: balancer.New(p.spec.Algorithm, bm)})
}

// pick chooses a member for src, skipping those already tried for this connection.
func (p *pool) pick(src netip.AddrPort, tried []*member) *member {
	c := p.choice.Load()
	if len(c.members) == 0 {
		return nil
	}
	if p.sticky != nil && len(tried) == 0 {
		if m := p.sticky.get(src.Addr()); m != nil && m.eligible() && slices.Contains(c.members, m) {
			return m
		}
	}
	i := c.sel.Pick(src)
	if i >= 0 && !slices.Contains(tried, c.members[i]) {
		return p.remember(src, c.members[i])
	}
	for _, m := range c.members {
		if !slices.Contains(tried, m) {
			return p.remember(src, m)
		}
	}
	return nil
}

func (p *pool) remember(src netip.AddrPort, m *member) *member {
	if p.sticky != nil {
		p.sticky.put(src.Addr(), m)
	}
	return m
}

// stickyTable maps a masked client address to its member until it idles out.
type stickyTable struct {
	timeout time.Duration
	bits    int
	mu      sync.Mutex
	entries map[netip.Addr]stickyEntry
	swept   time.Time
}

type stickyEntry struct {
	m    *member
	seen time.Time
}

func newStickyTable(p *model.Persistence) *stickyTable {
	return &stickyTable{timeout: p.Timeout, bits: p.Bits, entries: map[netip.Addr]stickyEntry{}}
}

// mask applies persistenceGranularity. It is usually an IPv4 netmask; an IPv6 client is then
// kept by its whole address, since a v4 mask says nothing about v6 networks.
func (s *stickyTable) mask(a netip.Addr) netip.Addr {
	a = a.Unmap()
	bits := min(s.bits, 32)
	if a.Is6() {
		bits = 128
		if s.bits > 32 {
			bits = s.bits
		}
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return p.Addr()
}

// carry points the table's entries at members, the pool's runtimes after a reconfiguration
// (a member whose weight changed has a new one), and forgets the clients of removed members.
func (s *stickyTable) carry(members []*member) *stickyTable {
	byKey := make(map[string]*member, len(members))
	for _, m := range members {
		byKey[memberKey(m.pool, m.spec)] = m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		if m := byKey[memberKey(e.m.pool, e.m.spec)]; m != nil {
			e.m = m
			s.entries[k] = e
		} else {
			delete(s.entries, k)
		}
	}
	return s
}

func (s *stickyTable) get(a netip.Addr) *member {
	k := s.mask(a)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[k]
	if !ok || now.Sub(e.seen) > s.timeout {
		return nil
	}
	e.seen = now
	s.entries[k] = e
	return e.m
}

func (s *stickyTable) put(a netip.Addr, m *member) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[s.mask(a)] = stickyEntry{m: m, seen: now}
	// Sweep at most once per timeout, so the table stays bounded by the clients of one period.
	if now.Sub(s.swept) > s.timeout {
		for k, e := range s.entries {
			if now.Sub(e.seen) > s.timeout {
				delete(s.entries, k)
			}
		}
		s.swept = now
	}
}
