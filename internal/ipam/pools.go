package ipam

import (
	"context"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Pool is a set of addresses a namespace may take VIPs from.
type Pool struct {
	Name       string // the VIPPool's, or "--vip-ranges"
	Prefixes   []netip.Prefix
	AutoAssign bool
	// Subnets and FloatingIPNetworks, by name or ID, govern the openstack provider.
	Subnets, FloatingIPNetworks []string
}

// Governed reports which of the openstack provider's choices any pool governs: once a pool
// names subnets (or floating IP networks), only the pools' ones may be used.
func Governed(pools []lbv1.VIPPool) (subnets, floatingIPNetworks bool) {
	for _, p := range pools {
		subnets = subnets || len(p.Spec.Subnets) > 0
		floatingIPNetworks = floatingIPNetworks || len(p.Spec.FloatingIPNetworks) > 0
	}
	return subnets, floatingIPNetworks
}

// older orders pools by age: creation times have one-second resolution, so within a second
// the incumbent (already accepted) comes first, then names decide.
func older(a, b *lbv1.VIPPool) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	ia, ib := meta.IsStatusConditionTrue(a.Status.Conditions, lbv1.ConditionAccepted), meta.IsStatusConditionTrue(b.Status.Conditions, lbv1.ConditionAccepted)
	if ia != ib {
		return ia
	}
	return a.Name < b.Name
}

// Overlaps settles VIPPools whose addresses overlap: the older pool keeps them (by creation
// time, then name) and each newer one is returned with the pool it overlaps. A pool with an
// overlap is not used at all, so no address can be handed out by two pools.
func Overlaps(pools []lbv1.VIPPool) map[string]string {
	sorted := make([]*lbv1.VIPPool, len(pools))
	for i := range pools {
		sorted[i] = &pools[i]
	}
	sort.SliceStable(sorted, func(i, j int) bool { return older(sorted[i], sorted[j]) })
	out := map[string]string{}
	var kept []*lbv1.VIPPool
	for _, p := range sorted {
		if other := overlapping(p, kept); other != "" {
			out[p.Name] = other
			continue
		}
		kept = append(kept, p)
	}
	return out
}

func overlapping(p *lbv1.VIPPool, kept []*lbv1.VIPPool) string {
	for _, k := range kept {
		for _, a := range prefixes(p.Spec.Addresses) {
			for _, b := range prefixes(k.Spec.Addresses) {
				if a.Overlaps(b) {
					return k.Name
				}
			}
		}
	}
	return ""
}

func prefixes(in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// PoolsFor returns the pools namespace ns may use, in the order they were made: every
// accepted VIPPool that names it or selects its labels, or that names and selects nothing.
func PoolsFor(pools []lbv1.VIPPool, ns *corev1.Namespace) []Pool {
	overlaps := Overlaps(pools)
	var out []Pool
	sort.SliceStable(pools, func(i, j int) bool { return older(&pools[i], &pools[j]) })
	for _, p := range pools {
		if _, bad := overlaps[p.Name]; bad || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if ok, err := admits(&p, ns); err == nil && ok { // a selector that does not parse admits no one
			out = append(out, Pool{Name: p.Name, Prefixes: prefixes(p.Spec.Addresses), AutoAssign: p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
				Subnets: p.Spec.Subnets, FloatingIPNetworks: p.Spec.FloatingIPNetworks})
		}
	}
	return out
}

func admits(p *lbv1.VIPPool, ns *corev1.Namespace) (bool, error) {
	if len(p.Spec.Namespaces) == 0 && p.Spec.NamespaceSelector == nil {
		return true, nil
	}
	for _, n := range p.Spec.Namespaces {
		if n == ns.Name {
			return true, nil
		}
	}
	if p.Spec.NamespaceSelector == nil {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector)
	if err != nil {
		return false, err
	}
	return sel.Matches(labels.Set(ns.Labels)), nil
}

func names(pools []Pool) string {
	var n []string
	for _, p := range pools {
		n = append(n, p.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// ReadPools reads, through c, the pools namespace may use, and every VIPPool of the cluster.
func ReadPools(ctx context.Context, c client.Reader, namespace string) ([]Pool, []lbv1.VIPPool, error) {
	var pools lbv1.VIPPoolList
	if err := c.List(ctx, &pools); err != nil {
		return nil, nil, err
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return nil, nil, err
	}
	return PoolsFor(pools.Items, &ns), pools.Items, nil
}
