package failover

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
)

// TestRestartHandOff restarts the agent of the only dataplane node as a DaemonSet rollout
// does (SIGTERM, the process gone, a new one started) while a client opens a connection to
// the VIP every 20 ms, and proves: no connection is refused, cut or delayed by a lost SYN; a connection open before
// the SIGTERM keeps working until it ends; the new agent takes the listeners back from the
// kernel (a member removed afterwards gets no more connections). The agent's pod and
// DaemonSet exist as objects, as in a cluster, so the agent knows another will follow.
func TestRestartHandOff(t *testing.T) {
	l := newLab(t, 1)
	// As on a Kubernetes node: the kernel forwards, so it can take connections to members.
	lantest.Sh(t, "ip", "netns", "exec", l.tp.Hosts["n1"].NS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: "l4lb-dataplane"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dataplane"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "dataplane"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "dataplane", Image: "l4lb"}}}}}}
	if err := l.k8s.Create(l.ctx, ds); err != nil {
		t.Fatal(err)
	}
	pod := func(name string) []string {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "l4lb-system", Name: name,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "dataplane", Image: "l4lb"}}}}
		if err := l.k8s.Create(l.ctx, p); err != nil {
			t.Fatal(err)
		}
		return []string{"POD_NAME=" + name}
	}
	l.start("n1", pod("dataplane-a")...)
	l.createLB()
	echo := l.createEcho()
	l.waitServed("start")
	// With the defaults the kernel carries this listener (its settings allow it, the node
	// forwards): a connection through it is the kernel's, not the agent's. Its pool is
	// programmed too (a listener served before its pool reached the node refuses connections).
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := l.k8s.Get(l.ctx, client.ObjectKeyFromObject(echo), echo)
		var pool lbv1.Pool
		if err == nil {
			err = l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: "echo"}, &pool)
		}
		if err == nil && echo.Status.DataPath == lbv1.DataPathKernel && meta.IsStatusConditionTrue(pool.Status.Conditions, lbv1.ConditionProgrammed) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the echo listener's data path: %q, %v; want Kernel", echo.Status.DataPath, err)
		}
	}
	long := l.dialEcho()
	kept := l.dialEcho()

	traffic := newClientLoop(l.cl, l.target)
	time.Sleep(300 * time.Millisecond)
	old := l.agents["n1"].cmd
	old.Process.Signal(syscall.SIGTERM)
	time.Sleep(time.Second)
	// The old agent still proxies the open connection; the kernel carries the new ones.
	long.roundTrip(t, "after SIGTERM")
	long.c.Close()
	exited := make(chan error, 1)
	go func() { exited <- old.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		l.dumpLogs()
		t.Fatal("the agent did not exit within 10 s of its last connection's end")
	}
	time.Sleep(time.Second) // the kubelet starts the next pod
	l.start("n1", pod("dataplane-b")...)
	l.waitServed("the new agent")
	time.Sleep(2 * time.Second)
	ok, refused, cut := traffic.stop()
	resent := traffic.retransmitted()
	fmt.Printf("agent restarted alone on its node (hand-off to the kernel): %d connections answered, %d refused, %d cut, %d answered after a lost SYN, longest gap %v\n",
		ok, refused, cut, resent, traffic.longestGap().Round(time.Millisecond))
	if refused != 0 || cut != 0 || resent != 0 || ok == 0 {
		l.dumpLogs()
		t.Fatalf("restart: %d of %d connections failed, %d more answered only after a lost SYN", refused+cut, ok+refused+cut, resent)
	}

	l.waitLog("n1", "took the listeners over from the kernel", 30*time.Second)
	// A connection the kernel path carried goes on through the restart and the take-over.
	kept.roundTrip(t, "after the restart")
	kept.c.Close()
	// The new agent serves: a member taken out gets no more new connections (the kernel's
	// table, had it stayed, would keep sending it its share).
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // statuses are written meanwhile
		var p lbv1.Pool
		if err := l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: "p"}, &p); err != nil {
			return err
		}
		p.Spec.Members = p.Spec.Members[:1] // m1
		return l.k8s.Update(l.ctx, &p)
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	for i := range 10 {
		if s, err := l.cl.Fetch(l.target, time.Second); err != nil || s != "m1" {
			t.Fatalf("connection %d after m2 was removed: %q, %v (want m1: the new agent should carry the listener)", i, s, err)
		}
	}
}

// echoConn is a connection to the VIP's echo listener.
type echoConn struct {
	c net.Conn
	r *bufio.Reader
}

func (l *lab) dialEcho() *echoConn {
	l.t.Helper()
	var c net.Conn
	err := l.cl.In(func() (err error) {
		c, err = net.DialTimeout("tcp", vipAddr+":9000", 5*time.Second)
		return err
	})
	if err != nil {
		l.t.Fatal(err)
	}
	e := &echoConn{c: c, r: bufio.NewReader(c)}
	e.roundTrip(l.t, "first line")
	return e
}

func (e *echoConn) roundTrip(t *testing.T, line string) {
	t.Helper()
	if err := e.try(line); err != nil {
		t.Fatal(err)
	}
}

// try sends line and reads it back.
func (e *echoConn) try(line string) error {
	e.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(e.c, line); err != nil {
		return fmt.Errorf("echo %q: %w", line, err)
	}
	got, err := e.r.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != line {
		return fmt.Errorf("echo %q: got %q, %v", line, got, err)
	}
	return nil
}

// createEcho adds a listener on the VIP's port 9000 to the lab's load balancer, its pool m1's
// echo: connections that stay open.
func (l *lab) createEcho() *lbv1.Listener {
	echo := &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo"},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 9000}}
	echoPool := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo"},
		Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "echo"}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
			Members: []lbv1.Member{{Name: "m1", Address: "192.0.2.11", ProtocolPort: 9000}}}}
	for _, o := range []client.Object{echo, echoPool} {
		if err := l.k8s.Create(l.ctx, o); err != nil {
			l.t.Fatal(err)
		}
	}
	return echo
}

// waitLog waits for node's agent log to hold s.
func (l *lab) waitLog(node, s string, limit time.Duration) {
	l.t.Helper()
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		if b, _ := os.ReadFile(l.agents[node].log); strings.Contains(string(b), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.dumpLogs()
	l.t.Fatalf("agent %s did not log %q within %v", node, s, limit)
}
