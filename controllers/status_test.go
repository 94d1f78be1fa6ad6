package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

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

// What GitOps tools built on kstatus (Flux, kpt, cli-utils) compute from the statuses the
// controller writes: in progress while pending, failed in ERROR, current once ACTIVE. Without
// Reconciling, kstatus takes a pending object whose observedGeneration is its generation as
// current (the last case shows the library does).
func TestKstatusReadsTheProvisioningStatus(t *testing.T) {
	accepted := metav1.Condition{Type: lbv1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: lbv1.ReasonAccepted}
	waiting := metav1.Condition{Type: lbv1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: lbv1.ReasonPending, Message: "waiting for the dataplane"}
	conflict := metav1.Condition{Type: lbv1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: lbv1.ReasonPortConflict, Message: "port 80 is taken"}
	cases := []struct {
		name   string
		prov   lbv1.ProvisioningStatus
		conds  []metav1.Condition
		bare   bool // the status without progress's conditions
		want   kstatus.Status
		reason string
	}{
		{"pending", lbv1.ProvisioningPendingCreate, []metav1.Condition{accepted, waiting}, false, kstatus.InProgressStatus, lbv1.ReasonPending},
		{"updating", lbv1.ProvisioningPendingUpdate, []metav1.Condition{accepted, waiting}, false, kstatus.InProgressStatus, lbv1.ReasonPending},
		{"refused", lbv1.ProvisioningError, []metav1.Condition{conflict}, false, kstatus.FailedStatus, lbv1.ReasonPortConflict},
		{"active", lbv1.ProvisioningActive, []metav1.Condition{accepted}, false, kstatus.CurrentStatus, ""},
		{"pending, without Reconciling", lbv1.ProvisioningPendingCreate, []metav1.Condition{accepted, waiting}, true, kstatus.CurrentStatus, ""},
	}
	for _, tc := range cases {
		l := &lbv1.Listener{TypeMeta: metav1.TypeMeta{APIVersion: lbv1.GroupVersion.String(), Kind: "Listener"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "l", Generation: 2}}
		l.Status.ProvisioningStatus, l.Status.ObservedGeneration = tc.prov, 2
		l.Status.Conditions = tc.conds
		if !tc.bare {
			p := progress(l, tc.prov, tc.conds...)
			if tc.reason != "" && (len(p) != 1 || p[0].Reason != tc.reason) {
				t.Errorf("%s: %+v, want the reason %s", tc.name, p, tc.reason)
			}
			l.Status.Conditions = append(l.Status.Conditions, p...)
		}
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(l)
		if err != nil {
			t.Fatal(err)
		}
		res, err := kstatus.Compute(&unstructured.Unstructured{Object: raw})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != tc.want {
			t.Errorf("%s: kstatus says %s (%s), want %s", tc.name, res.Status, res.Message, tc.want)
		}
	}
}

// A child is programmed by its load balancer's report only for its own UID and generation.
func TestReportedServesOnlyThisObjectAndGeneration(t *testing.T) {
	l := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{UID: "u1", Generation: 3}}
	cases := []struct {
		name       string
		rep        *lbv1.Served
		ok, failed bool
		reason     string
	}{
		{"no report", nil, false, false, lbv1.ReasonPending},
		{"another object of that name", &lbv1.Served{UID: "u0", Generation: 3, Reason: lbv1.ReasonProgrammed}, false, false, lbv1.ReasonPending},
		{"this generation", &lbv1.Served{UID: "u1", Generation: 3, Reason: lbv1.ReasonProgrammed}, true, false, lbv1.ReasonProgrammed},
		{"an older generation", &lbv1.Served{UID: "u1", Generation: 2, Reason: lbv1.ReasonProgrammed}, false, false, lbv1.ReasonPending},
		{"cannot bind", &lbv1.Served{UID: "u1", Generation: 3, Reason: lbv1.ReasonBindFailed, Message: "in use"}, false, true, lbv1.ReasonBindFailed},
		{"not served yet", &lbv1.Served{UID: "u1", Generation: 3, Reason: lbv1.ReasonPending}, false, false, lbv1.ReasonPending},
	}
	for _, tc := range cases {
		ok, failed, reason, _ := reported(l, tc.rep)
		if ok != tc.ok || failed != tc.failed || reason != tc.reason {
			t.Errorf("%s: programmed %v, failed %v, %s; want %v, %v, %s", tc.name, ok, failed, reason, tc.ok, tc.failed, tc.reason)
		}
	}
}

// While a load balancer's holder writes no report (agents from before status.served, during
// an upgrade), what they wrote on the child itself stands for it.
func TestAChildsOwnStatusStandsInForAMissingReport(t *testing.T) {
	l := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Name: "l", UID: "u1", Generation: 2}}
	if rep := fromOwnStatus(l); rep != nil {
		t.Fatalf("nothing written: %+v, want none", rep)
	}
	l.Status.DataPath = lbv1.DataPathKernel
	l.Status.Conditions = []metav1.Condition{{Type: lbv1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: lbv1.ReasonProgrammed, ObservedGeneration: 2}}
	if ok, _, _, _ := reported(l, fromOwnStatus(l)); !ok || fromOwnStatus(l).DataPath != lbv1.DataPathKernel {
		t.Errorf("programmed on the listener: %+v, want it served by the kernel", fromOwnStatus(l))
	}
	p := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u2", Generation: 1}}
	p.Status.Conditions = []metav1.Condition{{Type: lbv1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: lbv1.ReasonBindFailed, ObservedGeneration: 1}}
	p.Status.Members = []lbv1.MemberStatus{{Name: "m", OperatingStatus: lbv1.OperatingOnline}}
	rep := fromOwnStatus(p)
	if ok, failed, _, _ := reported(p, rep); ok || !failed || len(rep.Members) != 1 {
		t.Errorf("a failed pool: %+v, want failed with its member", rep)
	}
}
