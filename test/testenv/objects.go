package testenv

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// ScaleTree is one load balancer of issue 29's scale target, named lb in namespace ns: two TCP
// listeners (80, 443), each with a round-robin pool of four members, memberNet.20-23 on port
// 8080 (memberNet: the first three bytes of an IPv4 address, "192.0.2").
func ScaleTree(ns, lb, memberNet string) []client.Object {
	objs := []client.Object{&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: lb},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic}}}
	for _, port := range []int32{80, 443} {
		name := fmt.Sprintf("%s-%d", lb, port)
		var members []lbv1.Member
		for m := range 4 {
			members = append(members, lbv1.Member{Name: fmt.Sprintf("m%d", m), Address: fmt.Sprintf("%s.%d", memberNet, 20+m), ProtocolPort: 8080})
		}
		objs = append(objs,
			&lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: lb}, Protocol: lbv1.ListenerTCP, ProtocolPort: port}},
			&lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: name}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin, Members: members}})
	}
	return objs
}
