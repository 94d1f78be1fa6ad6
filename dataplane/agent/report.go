package agent

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/internal/ssa"
)

// reportInput is what one report reads of a reconciliation, indexed once for all the load
// balancers it reports.
type reportInput struct {
	res       model.Result
	trees     model.Trees
	listeners map[string]*model.Listener // served, by key
	pools     map[string]*model.Pool     // served, by key
	failed    map[string]error
	vipErrs   map[string]error
}

func newReportInput(s snapshot) reportInput {
	out := reportInput{res: s.res, trees: model.TreesOf(s.objs), failed: s.failed, vipErrs: s.vipErrs,
		listeners: map[string]*model.Listener{}, pools: map[string]*model.Pool{}}
	for i := range s.served.Listeners {
		l := &s.served.Listeners[i]
		out.listeners[l.Key] = l
		if l.Pool != nil {
			out.pools[l.Pool.Key] = l.Pool
		}
	}
	return out
}

// report writes the dataplane's part of the status of one held load balancer: holder,
// VIPAnnounced and Programmed, and how its listeners, pools and monitors are served (served),
// all in one write, as an amphora's heartbeat reports its whole tree; the controller turns
// served into each child's status. Only what changed is written.
func (a *Agent) report(ctx context.Context, s reportInput, lb *lbv1.LoadBalancer) error {
	lbKey := lb.Namespace + "/" + lb.Name
	res, failed, vipErrs := s.res, s.failed, s.vipErrs
	lbSt := lbv1.LoadBalancerStatus{Holder: a.NodeName, Served: &lbv1.ServedTree{}}
	if err := vipErrs[lbKey]; err != nil {
		lbSt.Conditions = ssa.Conditions(lb.Status.Conditions,
			cond(lb, lbv1.ConditionVIPAnnounced, false, lbv1.ReasonNoHolder, err.Error()),
			cond(lb, lbv1.ConditionProgrammed, false, lbv1.ReasonPending, "the VIP is not local"))
	} else {
		lbSt.Conditions = ssa.Conditions(lb.Status.Conditions,
			cond(lb, lbv1.ConditionVIPAnnounced, true, lbv1.ReasonAnnounced, "VIP "+lb.Status.VIPAddress+" held by node "+a.NodeName),
			cond(lb, lbv1.ConditionProgrammed, true, lbv1.ReasonProgrammed, ""))
	}
	tree := lbSt.Served

	for _, l := range s.trees.Listeners[lbKey] {
		if notAccepted(res, "Listener", l) {
			continue
		}
		key := l.Namespace + "/" + l.Name
		st := served(l, lbv1.ReasonProgrammed, "")
		switch {
		case failed[key] != nil:
			st = served(l, lbv1.ReasonBindFailed, fmt.Sprintf("node %s: %v", a.NodeName, failed[key]))
		case s.listeners[key] == nil && enabled(l.Spec.AdminStateUp) && enabled(lb.Spec.AdminStateUp):
			st = served(l, lbv1.ReasonPending, "not served yet")
		case s.listeners[key] != nil:
			st.DataPath = lbv1.DataPathProxy
			if a.Server.InKernel(key) {
				st.DataPath = lbv1.DataPathKernel
			}
		}
		tree.Listeners = append(tree.Listeners, st)
	}

	for _, p := range s.trees.Pools[lbKey] {
		if notAccepted(res, "Pool", p) {
			continue
		}
		mp := s.pools[p.Namespace+"/"+p.Name]
		st := served(p, lbv1.ReasonProgrammed, "")
		for _, m := range p.Spec.Members {
			st.Members = append(st.Members, lbv1.MemberStatus{Name: m.Name, Address: m.Address, ProtocolPort: m.ProtocolPort,
				OperatingStatus: a.memberStatus(mp, m)})
		}
		tree.Pools = append(tree.Pools, st)
	}

	for _, m := range s.trees.Monitors[lbKey] {
		if notAccepted(res, "HealthMonitor", m) {
			continue
		}
		tree.HealthMonitors = append(tree.HealthMonitors, served(m, lbv1.ReasonProgrammed, ""))
	}
	// In name order: the objects come in the cache's order, which changes from one pass to
	// the next, and a report in another order is another write.
	for _, l := range [][]lbv1.Served{tree.Listeners, tree.Pools, tree.HealthMonitors} {
		slices.SortFunc(l, func(a, b lbv1.Served) int { return strings.Compare(a.Name, b.Name) })
	}
	return a.apply(ctx, lb, lbSt)
}

// served is the report of obj's generation.
func served(obj client.Object, reason, msg string) lbv1.Served {
	return lbv1.Served{Name: obj.GetName(), UID: obj.GetUID(), Generation: obj.GetGeneration(), Reason: reason, Message: msg}
}

// memberStatus is Octavia's member operating status as this node sees it.
func (a *Agent) memberStatus(p *model.Pool, m lbv1.Member) lbv1.OperatingStatus {
	switch {
	case !enabled(m.AdminStateUp):
		return lbv1.OperatingOffline
	case m.Weight != nil && *m.Weight == 0:
		return lbv1.OperatingDraining
	case p == nil:
		return lbv1.OperatingOffline
	case p.Monitor == nil:
		return lbv1.OperatingNoMonitor
	}
	for _, mm := range p.Members {
		if mm.Name == m.Name {
			if a.Server.MemberUp(p.Key, mm.Name, mm.Address) {
				return lbv1.OperatingOnline
			}
			return lbv1.OperatingError
		}
	}
	return lbv1.OperatingOffline
}

func notAccepted(res model.Result, kind string, obj client.Object) bool {
	_, bad := res.Problems[model.Ref{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}]
	return bad
}

func enabled(b *bool) bool { return b == nil || *b }

// apply writes lb's status unless the same was written last time for this object and
// generation. What was written is remembered by the object's UID: a load balancer deleted and
// created again under the same name, even with the same spec and generation, is another
// object whose status is still to be written.
func (a *Agent) apply(ctx context.Context, lb *lbv1.LoadBalancer, status lbv1.LoadBalancerStatus) error {
	w := written{status: withoutTimes(status), generation: lb.GetGeneration()}
	key := lb.GetUID()
	a.mu.Lock()
	same := reflect.DeepEqual(a.reported[key], w)
	a.mu.Unlock()
	if same {
		return nil
	}
	if err := ssa.ApplyStatus(ctx, a.Client, "LoadBalancer", lb.Namespace, lb.Name, ssa.DataplaneManager, status); err != nil {
		return client.IgnoreNotFound(err)
	}
	a.mu.Lock()
	a.reported[key] = w
	a.mu.Unlock()
	return nil
}

// written is what apply wrote for a load balancer: the status, its conditions' transition
// times left out (the comparison is of content), and the object's generation.
type written struct {
	status     lbv1.LoadBalancerStatus
	generation int64
}

// withoutTimes is status with its conditions' transition times zeroed, on a copy.
func withoutTimes(status lbv1.LoadBalancerStatus) lbv1.LoadBalancerStatus {
	status.Conditions = slices.Clone(status.Conditions)
	for i := range status.Conditions {
		status.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	return status
}
