package controllers

import (
	"testing"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

const (
	on   = lbv1.OperatingOnline
	off  = lbv1.OperatingOffline
	deg  = lbv1.OperatingDegraded
	bad  = lbv1.OperatingError
	drn  = lbv1.OperatingDraining
	nomo = lbv1.OperatingNoMonitor
)

func ops(s ...lbv1.OperatingStatus) []lbv1.OperatingStatus { return s }

// The cases below are Octavia's health manager's rules (UpdateHealthDb in
// octavia/amphorae/drivers/health/heartbeat_udp.py); each names the branch it mirrors.

func TestPoolOperatingStatus(t *testing.T) {
	cases := []struct {
		name    string
		adminUp bool
		members []lbv1.OperatingStatus
		want    lbv1.OperatingStatus
	}{
		{"backend UP: all online", true, ops(on, on), on},
		{"NO_CHECK members count as working", true, ops(nomo, nomo), on},
		{"a member DOWN in an UP backend degrades it", true, ops(on, bad), deg},
		{"backend DOWN: all in error", true, ops(bad, bad), bad},
		{"backend DOWN: DRAIN and MAINT servers carry no weight", true, ops(drn, off), bad},
		{"one working, one drained", true, ops(on, drn), on},
		{"backend UP with no servers: an empty pool is ONLINE", true, nil, on},
		{"not rendered (disabled): no report, OFFLINE", false, ops(on, on), off},
	}
	for _, tc := range cases {
		if got := PoolOperatingStatus(tc.adminUp, tc.members); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestListenerOperatingStatus(t *testing.T) {
	cases := []struct {
		name                    string
		adminUp, served, failed bool
		want                    lbv1.OperatingStatus
	}{
		{"OPEN: serving", true, true, false, on},
		{"enabled but missing from the report: cannot bind", true, false, true, bad},
		{"not served yet (load balancer not ACTIVE)", true, false, false, off},
		{"disabled", false, true, false, off},
	}
	for _, tc := range cases {
		if got := ListenerOperatingStatus(tc.adminUp, tc.served, tc.failed); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestLoadBalancerOperatingStatus(t *testing.T) {
	cases := []struct {
		name             string
		adminUp          bool
		listeners, pools []lbv1.OperatingStatus
		want             lbv1.OperatingStatus
	}{
		{"healthy until proven otherwise", true, ops(on, on), ops(on, on), on},
		{"a pool with a member DOWN degrades it", true, ops(on, on), ops(deg, on), deg},
		{"a pool DOWN is an error", true, ops(on, on), ops(bad, on), bad},
		{"an error outranks a degraded pool", true, ops(on), ops(deg, bad), bad},
		{"a FULL listener degrades it", true, ops(deg, on), ops(on), deg},
		{"a listener in error does not change it", true, ops(bad, on), ops(on), on},
		{"offline pools do not count", true, ops(on), ops(off), on},
		{"nothing yet", true, nil, nil, on},
		{"disabled", false, ops(on), ops(bad), off},
	}
	for _, tc := range cases {
		if got := LoadBalancerOperatingStatus(tc.adminUp, tc.listeners, tc.pools); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestProvisioningStatus(t *testing.T) {
	cases := []struct {
		name                                   string
		deleting, accepted, programmed, failed bool
		prev, want                             lbv1.ProvisioningStatus
	}{
		{"new", false, true, false, false, "", lbv1.ProvisioningPendingCreate},
		{"programmed", false, true, true, false, lbv1.ProvisioningPendingCreate, lbv1.ProvisioningActive},
		{"changed after active", false, true, false, false, lbv1.ProvisioningActive, lbv1.ProvisioningPendingUpdate},
		{"refused", false, false, false, false, lbv1.ProvisioningActive, lbv1.ProvisioningError},
		{"dataplane failed", false, true, false, true, "", lbv1.ProvisioningError},
		{"deleting", true, true, true, false, lbv1.ProvisioningActive, lbv1.ProvisioningPendingDelete},
	}
	for _, tc := range cases {
		if got := ProvisioningStatus(tc.deleting, tc.accepted, tc.programmed, tc.failed, tc.prev); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
