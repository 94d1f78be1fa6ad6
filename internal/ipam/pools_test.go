package ipam

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

func vipPool(name string, age int, addresses []string, spec func(*lbv1.VIPPoolSpec)) lbv1.VIPPool {
	p := lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))},
		Spec: lbv1.VIPPoolSpec{Addresses: addresses}}
	if spec != nil {
		spec(&p.Spec)
	}
	return p
}

func TestOverlapsGoToTheNewerPool(t *testing.T) {
	pools := []lbv1.VIPPool{
		vipPool("newer", 5, []string{"198.51.100.128/25"}, nil),
		vipPool("older", 1, []string{"198.51.100.0/24"}, nil),
		vipPool("apart", 3, []string{"203.0.113.0/24", "2001:db8::/64"}, nil),
		vipPool("v6-inside", 9, []string{"2001:db8::1/128"}, nil),
	}
	got := Overlaps(pools)
	if len(got) != 2 || got["newer"] != "older" || got["v6-inside"] != "apart" {
		t.Fatalf("overlaps %v", got)
	}
}

func TestPoolsForANamespace(t *testing.T) {
	pools := []lbv1.VIPPool{
		vipPool("everyone", 1, []string{"198.51.100.0/28"}, nil),
		vipPool("by-name", 2, []string{"198.51.100.16/28"}, func(s *lbv1.VIPPoolSpec) { s.Namespaces = []string{"a"} }),
		vipPool("by-label", 3, []string{"198.51.100.32/28"}, func(s *lbv1.VIPPoolSpec) {
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}
		}),
		vipPool("manual", 4, []string{"198.51.100.48/28"}, func(s *lbv1.VIPPoolSpec) { s.Namespaces, s.AutoAssign = []string{"b"}, new(bool) }),
	}
	names := func(ns *corev1.Namespace) (out []string) {
		for _, p := range PoolsFor(pools, ns) {
			out = append(out, p.Name)
		}
		return out
	}
	for _, tc := range []struct {
		ns   *corev1.Namespace
		want string
	}{
		{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, "[everyone by-name]"},
		{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{"team": "blue"}}}, "[everyone by-label manual]"},
		{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, "[everyone]"},
	} {
		if got := names(tc.ns); fmtList(got) != tc.want {
			t.Errorf("namespace %s: %v, want %s", tc.ns.Name, got, tc.want)
		}
	}
}

func fmtList(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}

// TestStaticAllocatesFromTheNamespacesPools, with the controller-runtime fake client standing
// in for the cache: the first free address of an auto-assigning pool; an explicit address only
// inside a pool of the namespace; never one address twice.
func TestStaticAllocatesFromTheNamespacesPools(t *testing.T) {
	pools := []lbv1.VIPPool{
		vipPool("a", 1, []string{"198.51.100.0/30"}, func(s *lbv1.VIPPoolSpec) { s.Namespaces = []string{"a"} }),
		vipPool("b-manual", 2, []string{"198.51.100.8/30"}, func(s *lbv1.VIPPoolSpec) { s.Namespaces, s.AutoAssign = []string{"b"}, new(bool) }),
	}
	scheme := runtimeScheme(t)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&pools[0], &pools[1],
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b"}}).Build()
	s := NewStatic(nil, c)
	lb := func(ns, uid, addr string) *lbv1.LoadBalancer {
		l := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uid, UID: types.UID(uid)}}
		if addr != "" {
			l.Spec.VIP = &lbv1.VIP{Address: addr}
		}
		return l
	}
	shared := func(l *lbv1.LoadBalancer, key string) *lbv1.LoadBalancer {
		l.Annotations = map[string]string{lbv1.SharedAddressAnnotation: key}
		return l
	}
	ctx := context.Background()
	for _, tc := range []struct {
		lb     *lbv1.LoadBalancer
		want   string
		reason string
	}{
		{lb("a", "1", ""), "198.51.100.1", ""},
		{lb("a", "2", ""), "198.51.100.2", ""},
		{lb("a", "3", ""), "198.51.100.3", ""},
		{lb("a", "4", ""), "", lbv1.ReasonAllocationFailed}, // the /30 is used up
		{lb("b", "5", ""), "", lbv1.ReasonNotInPool},        // b's pool does not auto-assign
		{lb("b", "6", "198.51.100.9"), "198.51.100.9", ""},
		{lb("b", "7", "198.51.100.1"), "", lbv1.ReasonNotInPool}, // a's address
		{lb("a", "8", "198.51.100.9"), "", lbv1.ReasonNotInPool}, // b's address
		{lb("b", "9", "198.51.100.9"), "", lbv1.ReasonAddressInUse},
		// Shared: both ask, with the same key, from one namespace.
		{shared(lb("b", "10", "198.51.100.10"), "k"), "198.51.100.10", ""},
		{shared(lb("b", "11", "198.51.100.10"), "k"), "198.51.100.10", ""},
		{shared(lb("b", "12", "198.51.100.10"), "other"), "", lbv1.ReasonAddressInUse},
		{lb("b", "13", "198.51.100.10"), "", lbv1.ReasonAddressInUse},
		{shared(lb("b", "14", "198.51.100.9"), "k"), "", lbv1.ReasonAddressInUse}, // 6 has it unshared
	} {
		got, err := s.Allocate(ctx, tc.lb)
		if got.Address != tc.want || Reason(err, "") != tc.reason {
			t.Errorf("%s/%s: %q, %v; want %q (%s)", tc.lb.Namespace, tc.lb.Name, got.Address, err, tc.want, tc.reason)
		}
	}
	// The shared address stays while one of its load balancers has it.
	if err := s.Release(ctx, lb("b", "10", "")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Allocate(ctx, lb("b", "15", "198.51.100.10")); err == nil {
		t.Fatalf("an address still shared by 11 given to an unshared load balancer: %v", got)
	}
	s.Release(ctx, lb("b", "11", ""))
	if got, err := s.Allocate(ctx, lb("b", "15", "198.51.100.10")); err != nil || got.Address != "198.51.100.10" {
		t.Fatalf("released by both, not free again: %v, %v", got, err)
	}
}

func runtimeScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := lbv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}
