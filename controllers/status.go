package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// The pure part of the controllers: Octavia's status rules as functions of what the objects
// and the dataplane say, table-tested in status_test.go. The operating statuses follow
// Octavia's health manager, UpdateHealthDb.update_health and _process_pool_status in
// octavia/amphorae/drivers/health/heartbeat_udp.py, which turn an amphora's HAProxy report
// into statuses; docs/architecture.md ("Statuses") lists where l4lb differs, and why.

// memberWorks: a member that can take new connections (or is assumed to, without a monitor).
// DRAINING (weight 0) and OFFLINE (admin down) members take none, as HAProxy's backend counts
// only servers with a weight.
func memberWorks(s lbv1.OperatingStatus) bool {
	return s == lbv1.OperatingOnline || s == lbv1.OperatingNoMonitor
}

// PoolOperatingStatus cascades member statuses to the pool, as _process_pool_status does:
// the backend UP ("working or no servers") is ONLINE, so a pool without members is ONLINE;
// DOWN (members, none working) is ERROR; an ONLINE pool with a member in ERROR is DEGRADED.
// A disabled pool is not rendered, so Octavia finds no report for it: OFFLINE.
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
	case len(members) > 0 && working == 0:
		return lbv1.OperatingError
	case failing > 0:
		return lbv1.OperatingDegraded
	}
	return lbv1.OperatingOnline
}

// ListenerOperatingStatus, as update_health: a listener the dataplane serves is ONLINE (OPEN);
// one it failed to serve although enabled is ERROR (Octavia: enabled, the load balancer
// ACTIVE, and missing from the amphora's report); disabled, or not served yet, OFFLINE. Its
// pool does not change it: a failing pool shows on the pool and the load balancer.
func ListenerOperatingStatus(adminUp, served, failed bool) lbv1.OperatingStatus {
	switch {
	case !adminUp:
		return lbv1.OperatingOffline
	case failed:
		return lbv1.OperatingError
	case !served:
		return lbv1.OperatingOffline
	}
	return lbv1.OperatingOnline
}

// LoadBalancerOperatingStatus, as update_health: ONLINE until proven otherwise; a pool in
// ERROR (no working member) makes it ERROR; a DEGRADED pool (a member in ERROR) or listener
// (FULL) makes an ONLINE one DEGRADED. A listener in ERROR does not change it. OFFLINE when
// disabled.
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
		if l == lbv1.OperatingDegraded {
			out = lbv1.OperatingDegraded
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

// programmed reads the dataplane's Programmed condition on obj itself (a load balancer's, or a
// child's from agents before status.served) as reported reads an entry of the report.
func programmed(obj metav1.Object, conds []metav1.Condition) (ok, failed bool, reason, msg string) {
	return reported(obj, asServed(obj, conds))
}

// asServed is the Programmed condition among conds as a report's entry (nil without one).
func asServed(obj metav1.Object, conds []metav1.Condition) *lbv1.Served {
	c := meta.FindStatusCondition(conds, lbv1.ConditionProgrammed)
	if c == nil {
		return nil
	}
	rep := &lbv1.Served{Name: obj.GetName(), UID: obj.GetUID(), Generation: c.ObservedGeneration, Reason: c.Reason, Message: c.Message}
	if c.Status == metav1.ConditionTrue {
		rep.Reason = lbv1.ReasonProgrammed
	} else if c.Reason == lbv1.ReasonProgrammed {
		rep.Reason = lbv1.ReasonPending
	}
	return rep
}

// condition builds a condition for obj's generation.
func condition(obj metav1.Object, typ string, ok bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: obj.GetGeneration()}
}

// progress is the provisioning status as kstatus reads it: Reconciling while pending, Stalled
// in ERROR, each with the first of conds that is not true (what is awaited, or what failed);
// neither once ACTIVE. (PENDING_DELETE needs neither: kstatus reads the deletion itself.)
func progress(obj metav1.Object, prov lbv1.ProvisioningStatus, conds ...metav1.Condition) []metav1.Condition {
	typ := lbv1.ConditionReconciling
	switch prov {
	case lbv1.ProvisioningPendingCreate, lbv1.ProvisioningPendingUpdate:
	case lbv1.ProvisioningError:
		typ = lbv1.ConditionStalled
	default:
		return nil
	}
	reason, msg := lbv1.ReasonPending, "provisioning status "+string(prov)
	for _, c := range conds {
		if c.Status != metav1.ConditionTrue {
			reason, msg = c.Reason, c.Type+": "+c.Message
			break
		}
	}
	return []metav1.Condition{condition(obj, typ, true, reason, msg)}
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

// reported reads a child's entry in the dataplane's report: programmed only for this object
// (its UID: one made again under the same name is not served yet) and generation.
func reported(obj metav1.Object, rep *lbv1.Served) (ok, failed bool, reason, msg string) {
	switch {
	case rep == nil || rep.UID != obj.GetUID():
		return false, false, lbv1.ReasonPending, "waiting for the dataplane"
	case rep.Reason == lbv1.ReasonProgrammed && rep.Generation == obj.GetGeneration():
		return true, false, rep.Reason, rep.Message
	case rep.Reason == lbv1.ReasonProgrammed:
		return false, false, lbv1.ReasonPending, fmt.Sprintf("the dataplane serves generation %d", rep.Generation)
	}
	return false, rep.Reason == lbv1.ReasonBindFailed, rep.Reason, rep.Message
}
