package controllers

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/ssa"
)

// PoolReconciler reports a pool's acceptance and statuses, cascaded from the member health
// the dataplane reports in status.members.
type PoolReconciler struct{ Base }

func (r *PoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return watchServed(r.watchModel(mgr, "pool", &lbv1.Pool{}, "Pool"), servedPools).Complete(r.watched("pool", r))
}

func (r *PoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p lbv1.Pool
	if err := r.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	objs, res, ok := r.model.get(&p, "Pool")
	if !ok {
		return ctrl.Result{}, nil // the next build of the model queues it
	}
	rep, err := r.served(ctx, &p, model.PoolLoadBalancer(&p, objs.Listeners), servedPools)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := lbv1.PoolStatus{MemberCount: int32(len(p.Spec.Members))}
	if rep != nil && rep.UID == p.UID {
		st.Members = rep.Members
	}
	reported := map[string]lbv1.OperatingStatus{}
	for _, m := range st.Members {
		reported[m.Name] = m.OperatingStatus
	}
	var members []lbv1.OperatingStatus
	for _, m := range p.Spec.Members {
		members = append(members, reported[m.Name])
	}
	st.CommonStatus = r.childStatus(&p, "Pool", res, &p.Status.CommonStatus, rep, func(served, _ bool) lbv1.OperatingStatus {
		if !served || p.Spec.ListenerRef == nil { // as Octavia's: a pool serving no listener is OFFLINE
			return lbv1.OperatingOffline
		}
		return PoolOperatingStatus(enabled(p.Spec.AdminStateUp), members)
	})
	st.Conditions = append(st.Conditions, ssa.Conditions(p.Status.Conditions, membersAccepted(&p, res.Refused[model.Ref{Kind: "Pool", Namespace: p.Namespace, Name: p.Name}]))...)
	changed := p.Status.MemberCount != st.MemberCount || !equality.Semantic.DeepEqual(p.Status.Members, st.Members)
	return r.applyChild(ctx, &p, "Pool", &p.Status.CommonStatus, &st.CommonStatus, changed, st)
}

// membersAccepted says which members an address rule keeps out of the pool, and why.
func membersAccepted(p *lbv1.Pool, refused []model.RefusedMember) metav1.Condition {
	if len(refused) == 0 {
		return condition(p, lbv1.ConditionMembersAccepted, true, lbv1.ReasonAccepted, "")
	}
	var why []string
	for _, m := range refused {
		why = append(why, fmt.Sprintf("member %s: %s", m.Name, m.Reason))
	}
	return condition(p, lbv1.ConditionMembersAccepted, false, lbv1.ReasonAddressRefused,
		"not served: "+strings.Join(why, "; "))
}

func servedPools(t *lbv1.ServedTree) []lbv1.Served { return t.Pools }
