package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// The pure part of the controllers: Octavia's status rules as functions of what the objects
// and the dataplane say, table-tested in status_test.go.

// worst orders operating statuses by Octavia's precedence: ERROR > DEGRADED > ONLINE.
func worst(a, b lbv1.OperatingStatus) lbv1.OperatingStatus {
	rank := map[lbv1.OperatingStatus]int{lbv1.OperatingError: 3, lbv1.OperatingDegraded: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// memberWorks: a member that can take traffic (or is assumed to, without a monitor).
func memberWorks(s lbv1.OperatingStatus) bool {
	return s == lbv1.OperatingOnline || s == lbv1.OperatingNoMonitor
}

// PoolOperatingStatus cascades member statuses to the pool: all working -> ONLINE; some
// ERROR -> DEGRADED; none working -> ERROR; admin down -> OFFLINE.
func PoolOperatingStatus(adminUp bool, members []lbv1.OperatingStatus) lbv1.OperatingStatus {
	if !adminUp {
		return lbv1.OperatingOffline
	}
	working, failing := 0, 0
	for _, m := range members {
		switch {
		case memberWorks(m):
			working++
		case m == lbv1.OperatingError:
			failing++
		}
	}
	switch {
	case working == 0:
		return lbv1.OperatingError
	case failing > 0:
		return lbv1.OperatingDegraded
	}
	return lbv1.OperatingOnline
}

// ListenerOperatingStatus: serving -> ONLINE, DEGRADED when its pool is DEGRADED or ERROR;
// the dataplane failed to serve it although enabled -> ERROR; admin down, or not served yet ->
// OFFLINE (as Octavia shows while it provisions).
func ListenerOperatingStatus(adminUp, served, failed bool, pool lbv1.OperatingStatus) lbv1.OperatingStatus {
	switch {
	case !adminUp:
		return lbv1.OperatingOffline
	case failed:
		return lbv1.OperatingError
	case !served:
		return lbv1.OperatingOffline
	case pool == lbv1.OperatingDegraded || pool == lbv1.OperatingError:
		return lbv1.OperatingDegraded
	}
	return lbv1.OperatingOnline
}

// LoadBalancerOperatingStatus: ERROR if a pool is ERROR, else DEGRADED if anything below is
// DEGRADED or ERROR, else ONLINE; OFFLINE when admin down.
func LoadBalancerOperatingStatus(adminUp bool, listeners, pools []lbv1.OperatingStatus) lbv1.OperatingStatus {
	if !adminUp {
		return lbv1.OperatingOffline
	}
	out := lbv1.OperatingOnline
	for _, p := range pools {
		if p == lbv1.OperatingError {
			return lbv1.OperatingError
		}
		if p == lbv1.OperatingDegraded {
			out = lbv1.OperatingDegraded
		}
	}
	for _, l := range listeners {
		if l == lbv1.OperatingError || l == lbv1.OperatingDegraded {
			out = worst(out, lbv1.OperatingDegraded)
		}
	}
	return out
}

// ProvisioningStatus: PENDING_DELETE while deleting; ERROR when refused; ACTIVE once the
// dataplane serves this generation; until then PENDING_CREATE for what never was active and
// PENDING_UPDATE for what was.
func ProvisioningStatus(deleting, accepted, programmed, failed bool, previous lbv1.ProvisioningStatus) lbv1.ProvisioningStatus {
	switch {
	case deleting:
		return lbv1.ProvisioningPendingDelete
	case !accepted || failed:
		return lbv1.ProvisioningError
	case programmed:
		return lbv1.ProvisioningActive
	case previous == lbv1.ProvisioningActive || previous == lbv1.ProvisioningPendingUpdate:
		return lbv1.ProvisioningPendingUpdate
	}
	return lbv1.ProvisioningPendingCreate
}

// programmed reads the dataplane's Programmed condition: true only for this generation.
func programmed(obj metav1.Object, conds []metav1.Condition) (ok, failed bool, reason, msg string) {
	c := meta.FindStatusCondition(conds, lbv1.ConditionProgrammed)
	if c == nil {
		return false, false, lbv1.ReasonPending, "waiting for the dataplane"
	}
	if c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.GetGeneration() {
		return true, false, c.Reason, c.Message
	}
	if c.Status == metav1.ConditionTrue {
		return false, false, lbv1.ReasonPending, fmt.Sprintf("the dataplane serves generation %d", c.ObservedGeneration)
	}
	return false, c.Reason == lbv1.ReasonBindFailed, c.Reason, c.Message
}

// condition builds a condition for obj's generation.
func condition(obj metav1.Object, typ string, ok bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: obj.GetGeneration()}
}

// ready summarises: Ready is true when every condition that matters is.
func ready(obj metav1.Object, conds ...metav1.Condition) metav1.Condition {
	for _, c := range conds {
		if c.Status != metav1.ConditionTrue {
			return condition(obj, lbv1.ConditionReady, false, lbv1.ReasonNotReady, c.Type+": "+c.Message)
		}
	}
	return condition(obj, lbv1.ConditionReady, true, lbv1.ReasonReady, "")
}
