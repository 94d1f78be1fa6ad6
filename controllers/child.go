package controllers

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
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

// applyChild writes a child's status st, whose common part is next, when it differs from cur
// (or changed says it does), unless it is a first status that may still wait (firstStatus).
func (b *Base) applyChild(ctx context.Context, obj client.Object, kind string, cur, next *lbv1.CommonStatus, changed bool, st any) (ctrl.Result, error) {
	if !changed && !commonChanged(cur, next) {
		return ctrl.Result{}, nil
	}
	if wait := b.first.hold(obj, cur, next, time.Now()); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{}, ssa.ApplyStatus(ctx, b.Client, kind, obj.GetNamespace(), obj.GetName(), ssa.ControllerManager, st)
}
