package controllers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/ssa"
)

// childStatus computes Accepted, reads Programmed and builds the common status; operating is
// the kind's own operating status given whether the dataplane serves it.
func (b *Base) childStatus(obj client.Object, kind string, res model.Result, cur *lbv1.CommonStatus,
	operating func(programmed, failed bool) lbv1.OperatingStatus) lbv1.CommonStatus {
	accepted, ok := acceptance(obj, res, kind)
	b.noteAcceptance(obj, cur.Conditions, accepted)
	isProgrammed, failed, reason, msg := programmed(obj, cur.Conditions)
	prog := condition(obj, lbv1.ConditionProgrammed, isProgrammed, reason, msg)
	st := lbv1.CommonStatus{
		ProvisioningStatus: ProvisioningStatus(!obj.GetDeletionTimestamp().IsZero(), ok, isProgrammed, failed, cur.ProvisioningStatus),
		OperatingStatus:    operating(isProgrammed, failed),
		ObservedGeneration: obj.GetGeneration(),
	}
	conds := append([]metav1.Condition{accepted, ready(obj, accepted, prog)}, progress(obj, st.ProvisioningStatus, accepted, prog)...)
	st.Conditions = ssa.Conditions(cur.Conditions, conds...)
	return st
}

func commonChanged(cur, next *lbv1.CommonStatus) bool {
	return cur.ProvisioningStatus != next.ProvisioningStatus || cur.OperatingStatus != next.OperatingStatus ||
		cur.ObservedGeneration != next.ObservedGeneration || ssa.Changed(cur.Conditions, next.Conditions)
}
