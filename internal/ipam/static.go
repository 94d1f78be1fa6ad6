package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Static hands out addresses where there is no cloud, from the pools the load balancer's
// namespace may use: spec.vip.address when it lies in one of them, otherwise the lowest free
// address of the first auto-assigning pool with one. An address is never given to two load
// balancers, unless both ask for it by spec.vip.address from one namespace with the same
// lbv1.SharedAddressAnnotation.
type Static struct {
	ranges []netip.Prefix
	cache  client.Reader // VIPPools and namespaces; nil: the ranges only

	mu    sync.Mutex
	owner map[netip.Addr]*holders
	addr  map[types.UID]netip.Addr
}

// holders are the load balancers an address is given to: one, or several sharing it.
type holders struct {
	uids      map[types.UID]bool
	namespace string
	share     string // the sharing key; "" for an address that is not shared
}

// admits reports whether lb may have the address too.
func (h *holders) admits(lb *lbv1.LoadBalancer) bool {
	if h.uids[lb.UID] {
		return true
	}
	key := lb.Annotations[lbv1.SharedAddressAnnotation]
	return key != "" && key == h.share && lb.Namespace == h.namespace
}

// give records that lb has address a (which admits it).
func (s *Static) give(a netip.Addr, lb *lbv1.LoadBalancer) {
	h := s.owner[a]
	if h == nil {
		h = &holders{uids: map[types.UID]bool{}, namespace: lb.Namespace, share: lb.Annotations[lbv1.SharedAddressAnnotation]}
		s.owner[a] = h
	}
	h.uids[lb.UID] = true
	s.addr[lb.UID] = a
}

// NewStatic returns a static provider allocating from ranges (CIDRs; may be empty), a pool
// every namespace may use, and from the VIPPools read through cache (may be nil).
func NewStatic(ranges []netip.Prefix, cache client.Reader) *Static {
	return &Static{ranges: ranges, cache: cache, owner: map[netip.Addr]*holders{}, addr: map[types.UID]netip.Addr{}}
}

// pools returns the pools lb's namespace may use: the ranges, then its VIPPools.
func (s *Static) pools(ctx context.Context, lb *lbv1.LoadBalancer) ([]Pool, error) {
	var out []Pool
	if len(s.ranges) > 0 {
		out = append(out, Pool{Name: "--vip-ranges", Prefixes: s.ranges, AutoAssign: true})
	}
	if s.cache == nil {
		return out, nil
	}
	more, _, err := ReadPools(ctx, s.cache, lb.Namespace)
	return append(out, more...), err
}

// Restore records allocations that already exist (from the load balancers' status), so a
// restarted controller never hands them out again.
func (s *Static) Restore(lbs []lbv1.LoadBalancer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range lbs {
		if a, err := netip.ParseAddr(lb.Status.VIPAddress); err == nil && lb.Status.VIPPortID == "" {
			if h := s.owner[a]; h == nil || h.admits(&lb) {
				s.give(a, &lb)
			}
		}
	}
}

func (s *Static) Allocate(ctx context.Context, lb *lbv1.LoadBalancer) (Allocation, error) {
	pools, err := s.pools(ctx, lb)
	if err != nil {
		return Allocation{}, &Error{Reason: lbv1.ReasonProviderUnavailable, Err: fmt.Errorf("reading the VIP pools: %w", err)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addr[lb.UID]; ok {
		return Allocation{Address: a.String()}, nil
	}
	if lb.Spec.VIP != nil && lb.Spec.VIP.Address != "" {
		a, err := netip.ParseAddr(lb.Spec.VIP.Address)
		if err != nil {
			return Allocation{}, &Error{Reason: lbv1.ReasonInvalid, Err: fmt.Errorf("spec.vip.address %q is not an IP address", lb.Spec.VIP.Address)}
		}
		if !inPools(pools, a) {
			return Allocation{}, &Error{Reason: lbv1.ReasonNotInPool, Err: fmt.Errorf("spec.vip.address %s is in no VIP pool namespace %s may use (pools: %s)", a, lb.Namespace, names(pools))}
		}
		if h := s.owner[a]; h != nil && !h.admits(lb) {
			return Allocation{}, &Error{Reason: lbv1.ReasonAddressInUse, Err: fmt.Errorf("%s is already the VIP of another load balancer (sharing it takes the same %s annotation on both, in one namespace)", a, lbv1.SharedAddressAnnotation)}
		}
		s.give(a, lb)
		return Allocation{Address: a.String()}, nil
	}
	auto := 0
	for _, p := range pools {
		if !p.AutoAssign || len(p.Prefixes) == 0 {
			continue
		}
		auto++
		for _, r := range p.Prefixes {
			// Skip the network address of ranges that have one, as a router would.
			a := r.Masked().Addr()
			if r.Addr().Is4() && r.Bits() < 31 {
				a = a.Next()
			}
			for ; r.Contains(a); a = a.Next() {
				if _, taken := s.owner[a]; !taken {
					s.give(a, lb)
					return Allocation{Address: a.String()}, nil
				}
			}
		}
	}
	if auto == 0 {
		return Allocation{}, &Error{Reason: lbv1.ReasonNotInPool, Err: fmt.Errorf("no VIP pool assigns addresses to namespace %s: set spec.vip.address within one, or ask an administrator for a VIPPool", lb.Namespace)}
	}
	return Allocation{}, &Error{Reason: lbv1.ReasonAllocationFailed, Err: fmt.Errorf("every address of the VIP pools of namespace %s (%s) is in use", lb.Namespace, names(pools))}
}

func inPools(pools []Pool, a netip.Addr) bool {
	for _, p := range pools {
		for _, r := range p.Prefixes {
			if r.Contains(a) {
				return true
			}
		}
	}
	return false
}

func (s *Static) Release(_ context.Context, lb *lbv1.LoadBalancer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addr[lb.UID]; ok {
		if h := s.owner[a]; h != nil {
			delete(h.uids, lb.UID)
			if len(h.uids) == 0 {
				delete(s.owner, a)
			}
		}
		delete(s.addr, lb.UID)
	}
	return nil
}
