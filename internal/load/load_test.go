package load

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

func TestInputChangedIgnoresTheStatusesAgentsWrite(t *testing.T) {
	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Name: "lb", Generation: 1}}
	lb.Status.VIPAddress = "198.51.100.1"
	listener := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Name: "l", Generation: 1}}
	listener.Status.Conditions = []metav1.Condition{{Type: lbv1.ConditionAccepted, Status: metav1.ConditionTrue}}
	node := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}}}
	for _, tc := range []struct {
		name   string
		old    client.Object
		change func(client.Object)
		want   bool
	}{
		{"a spec change", lb, func(o client.Object) { o.SetGeneration(2) }, true},
		{"a label", lb, func(o client.Object) { o.SetLabels(map[string]string{"a": "b"}) }, true},
		{"an annotation", listener, func(o client.Object) { o.SetAnnotations(map[string]string{"a": "b"}) }, true},
		{"deletion", listener, func(o client.Object) { now := metav1.Now(); o.SetDeletionTimestamp(&now) }, true},
		{"the VIP", lb, func(o client.Object) { o.(*lbv1.LoadBalancer).Status.VIPAddress = "198.51.100.2" }, true},
		{"acceptance", listener, func(o client.Object) { o.(*lbv1.Listener).Status.Conditions[0].Status = metav1.ConditionFalse }, true},
		{"a node's address", node, func(o client.Object) { o.(*corev1.Node).Status.Addresses[0].Address = "192.0.2.2" }, true},
		{"a node's pod range", node, func(o client.Object) { o.(*corev1.Node).Spec.PodCIDRs = []string{"10.244.0.0/24"} }, true},
		{"an operating status", lb, func(o client.Object) { o.(*lbv1.LoadBalancer).Status.OperatingStatus = lbv1.OperatingOnline }, false},
		{"the holder", lb, func(o client.Object) { o.(*lbv1.LoadBalancer).Status.Holder = "node-1" }, false},
		{"Programmed", listener, func(o client.Object) {
			l := o.(*lbv1.Listener)
			l.Status.Conditions = append(l.Status.Conditions, metav1.Condition{Type: lbv1.ConditionProgrammed, Status: metav1.ConditionTrue})
		}, false},
		{"a member's status", &lbv1.Pool{}, func(o client.Object) {
			o.(*lbv1.Pool).Status.Members = []lbv1.MemberStatus{{Name: "m1", OperatingStatus: lbv1.OperatingOnline}}
		}, false},
		{"a node's heartbeat", node, func(o client.Object) {
			o.(*corev1.Node).Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, LastHeartbeatTime: metav1.Now()}}
		}, false},
		{"a new resource version", listener, func(o client.Object) { o.SetResourceVersion("42") }, false},
	} {
		cur := tc.old.DeepCopyObject().(client.Object)
		tc.change(cur)
		if got := InputChanged(tc.old, cur); got != tc.want {
			t.Errorf("%s: InputChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
