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

func TestPoolOperatingStatus(t *testing.T) {
	cases := []struct {
		name    string
		adminUp bool
		members []lbv1.OperatingStatus
		want    lbv1.OperatingStatus
	}{
		{"all online", true, ops(on, on), on},
		{"no monitor counts as working", true, ops(nomo, nomo), on},
		{"one in error", true, ops(on, bad), deg},
		{"all in error", true, ops(bad, bad), bad},
		{"draining and offline members do not work", true, ops(drn, off), bad},
		{"one working, one drained", true, ops(on, drn), on},
		{"no members", true, nil, bad},
		{"admin down", false, ops(on, on), off},
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
		pool                    lbv1.OperatingStatus
		want                    lbv1.OperatingStatus
	}{
		{"serving", true, true, false, on, on},
		{"serving a degraded pool", true, true, false, deg, deg},
		{"serving a failed pool", true, true, false, bad, deg},
		{"without a pool", true, true, false, "", on},
		{"cannot bind", true, false, true, on, bad},
		{"not served yet", true, false, false, on, off},
		{"admin down", false, true, false, on, off},
	}
	for _, tc := range cases {
		if got := ListenerOperatingStatus(tc.adminUp, tc.served, tc.failed, tc.pool); got != tc.want {
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
		{"all online", true, ops(on, on), ops(on, on), on},
		{"a degraded pool", true, ops(deg, on), ops(deg, on), deg},
		{"a failed pool is an error", true, ops(deg, on), ops(bad, on), bad},
		{"a failed listener degrades", true, ops(bad, on), ops(on), deg},
		{"nothing yet", true, nil, nil, on},
		{"admin down", false, ops(on), ops(bad), off},
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
