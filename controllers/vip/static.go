package vip

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Static hands out addresses where there is no cloud: spec.vip.address when given, otherwise
// the lowest free address of its ranges. An address is never given to two load balancers.
type Static struct {
	ranges []netip.Prefix

	mu    sync.Mutex
	owner map[netip.Addr]types.UID
	addr  map[types.UID]netip.Addr
}

// NewStatic returns a static provider allocating from ranges (CIDRs; may be empty).
func NewStatic(ranges []netip.Prefix) *Static {
	return &Static{ranges: ranges, owner: map[netip.Addr]types.UID{}, addr: map[types.UID]netip.Addr{}}
}

// Restore records allocations that already exist (from the load balancers' status), so a
// restarted controller never hands them out again.
func (s *Static) Restore(lbs []lbv1.LoadBalancer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range lbs {
		if a, err := netip.ParseAddr(lb.Status.VIPAddress); err == nil && lb.Status.VIPPortID == "" {
			if _, taken := s.owner[a]; !taken {
				s.owner[a], s.addr[lb.UID] = lb.UID, a
			}
		}
	}
}

func (s *Static) Allocate(_ context.Context, lb *lbv1.LoadBalancer) (Allocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addr[lb.UID]; ok {
		return Allocation{Address: a.String()}, nil
	}
	if lb.Spec.VIP != nil && lb.Spec.VIP.Address != "" {
		a, err := netip.ParseAddr(lb.Spec.VIP.Address)
		if err != nil {
			return Allocation{}, &Error{Reason: lbv1.ReasonInvalid, Err: fmt.Errorf("vip.address %q is not an IP address", lb.Spec.VIP.Address)}
		}
		if other, taken := s.owner[a]; taken && other != lb.UID {
			return Allocation{}, &Error{Reason: lbv1.ReasonAddressInUse, Err: fmt.Errorf("%s is already the VIP of another load balancer", a)}
		}
		s.owner[a], s.addr[lb.UID] = lb.UID, a
		return Allocation{Address: a.String()}, nil
	}
	for _, r := range s.ranges {
		// Skip the network address of ranges that have one, as a router would.
		a := r.Masked().Addr()
		if r.Addr().Is4() && r.Bits() < 31 {
			a = a.Next()
		}
		for ; r.Contains(a); a = a.Next() {
			if _, taken := s.owner[a]; !taken {
				s.owner[a], s.addr[lb.UID] = lb.UID, a
				return Allocation{Address: a.String()}, nil
			}
		}
	}
	if len(s.ranges) == 0 {
		return Allocation{}, &Error{Reason: lbv1.ReasonAllocationFailed, Err: fmt.Errorf("set spec.vip.address, or start the controller with --vip-ranges")}
	}
	return Allocation{}, &Error{Reason: lbv1.ReasonAllocationFailed, Err: fmt.Errorf("every address of the VIP ranges %v is in use", s.ranges)}
}

func (s *Static) Release(_ context.Context, lb *lbv1.LoadBalancer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addr[lb.UID]; ok {
		delete(s.owner, a)
		delete(s.addr, lb.UID)
	}
	return nil
}
