package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
)

// tree is a load balancer in namespace ns with the VIP at, a TCP listener on port and a pool
// of members, as objects.
func tree(ns string, age int, at netip.AddrPort, members ...lbv1.Member) model.Objects {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}
	}
	return model.Objects{
		LoadBalancers: []lbv1.LoadBalancer{{ObjectMeta: meta("lb"), Status: lbv1.LoadBalancerStatus{VIPAddress: at.Addr().String()}}},
		Listeners: []lbv1.Listener{{ObjectMeta: meta("l"), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"},
			Protocol: lbv1.ListenerTCP, ProtocolPort: int32(at.Port())}}},
		Pools: []lbv1.Pool{{ObjectMeta: meta("p"), Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "l"},
			Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin, Members: members}}},
	}
}

func memberAt(name string, a netip.AddrPort) lbv1.Member {
	return lbv1.Member{Name: name, Address: a.Addr().String(), ProtocolPort: int32(a.Port())}
}

// TestReservedMembersGetNoConnection: with the default address rules, a tenant's members at
// 127.0.0.1 (the node's own services) and 169.254.169.254 (the metadata service) are never
// dialled: the proxy refuses the client, and the local service sees nothing.
func TestReservedMembersGetNoConnection(t *testing.T) { onBothPaths(t, reservedMembersGetNoConnection) }

func reservedMembersGetNoConnection(t *testing.T, p path) {
	node := tcptest.Named(t, "node-service") // a service of the node, on 127.0.0.1
	vip := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.77"), freePort(t).Port())
	objs := tree("tenant", 0, vip, memberAt("kubelet", node.Addr), memberAt("metadata", netip.MustParseAddrPort("169.254.169.254:80")))
	// The VIP is on loopback too, only because this test has no other address: an
	// administrator allows that one address, not the members.
	objs.Policy = model.Policy{Allow: []netip.Prefix{netip.PrefixFrom(vip.Addr(), 32)}}
	res := model.Build(objs)
	if len(res.Refused[model.Ref{Kind: "Pool", Namespace: "tenant", Name: "p"}]) != 2 {
		t.Fatalf("refused: %+v", res.Refused)
	}
	p.serve(t, Options{}, res.Model.Listeners...)
	for range 5 {
		if got, err := get(t, vip); err == nil && got != "" {
			t.Fatalf("a refused member answered %q", got)
		}
	}
	if n := node.Hits.Load(); n != 0 {
		t.Fatalf("the node's service got %d connections", n)
	}
}

// TestConflictingListenerNeverBinds: two namespaces' listeners on one VIP, protocol and port:
// the dataplane binds the older only, and every connection reaches the older's members.
func TestConflictingListenerNeverBinds(t *testing.T) { onBothPaths(t, conflictingListenerNeverBinds) }

func conflictingListenerNeverBinds(t *testing.T, p path) {
	older, newer := tcptest.Named(t, "older"), tcptest.Named(t, "newer")
	vip := freePort(t)
	a := tree("a", 0, vip, memberAt("m", older.Addr))
	b := tree("b", 60, vip, memberAt("m", newer.Addr))
	objs := model.Objects{
		LoadBalancers: append(a.LoadBalancers, b.LoadBalancers...),
		Listeners:     append(a.Listeners, b.Listeners...),
		Pools:         append(a.Pools, b.Pools...),
		Policy:        model.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
	}
	res := model.Build(objs)
	if len(res.Model.Listeners) != 1 || res.Problems[model.Ref{Kind: "Listener", Namespace: "b", Name: "l"}].Reason != lbv1.ReasonPortConflict {
		t.Fatalf("served %+v, problems %v", res.Model.Listeners, res.Problems)
	}
	p.serve(t, Options{}, res.Model.Listeners...)
	for _, got := range answers(t, vip, 6) {
		if got != "older" {
			t.Fatalf("a connection reached the newer listener's member: %q", got)
		}
	}
	if newer.Hits.Load() != 0 {
		t.Fatal("the newer listener's member got connections")
	}
}
