// Package vip allocates load balancer VIPs. A Provider is the one small interface the
// LoadBalancer reconciler talks to; static (addresses given or from ranges) lives here, and
// the OpenStack provider (Neutron ports and floating IPs) beside it.
package ipam

import (
	"context"
	"errors"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Allocation is what a provider made for a load balancer.
type Allocation struct {
	Address string
	PortID  string
	// NetworkID and SubnetID are the Neutron network and subnet of the VIP port.
	NetworkID, SubnetID string
	FloatingIPAddress   string
	FloatingIPID        string
}

// Provider allocates and releases VIPs. Both are idempotent: called again for the same load
// balancer they return what exists, or do nothing.
type Provider interface {
	Allocate(ctx context.Context, lb *lbv1.LoadBalancer) (Allocation, error)
	Release(ctx context.Context, lb *lbv1.LoadBalancer) error
}

// Inputs is implemented by providers whose allocation depends on more than the load
// balancer's spec. Inputs returns those other inputs as a string that changes when they do
// (the OpenStack provider: the nodes whose ports must accept the VIP), read without calling
// the cloud.
type Inputs interface {
	Inputs(ctx context.Context) (string, error)
}

// Error is a provider failure with the condition reason the user should see.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Reason extracts the condition reason of err, or def.
func Reason(err error, def string) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return def
}
