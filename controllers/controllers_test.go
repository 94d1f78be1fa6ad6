package controllers_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/ipam"
	"github.com/l4lb/l4lb/test/testenv"
)

// The reconcilers run against a real kube-apiserver with a real dataplane agent beside them,
// proxying on loopback to real back-end sockets: the statuses checked here are the ones users
// see, produced by the same parts they run.

var k8s client.Client

// static is the controller's static provider, counting its calls by load balancer.
var static = &counting{}

type counting struct {
	ipam.Provider
	mu    sync.Mutex
	calls map[types.UID]int
}

func (c *counting) Allocate(ctx context.Context, lb *lbv1.LoadBalancer) (ipam.Allocation, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[types.UID]int{}
	}
	c.calls[lb.UID]++
	c.mu.Unlock()
	return c.Provider.Allocate(ctx, lb)
}

func (c *counting) of(uid types.UID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[uid]
}

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	// With the Gateway API's CRDs, as a cluster that has them (gateway_test.go).
	gwCRDs, err := testenv.GatewayAPICRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env, err := testenv.Start(gwCRDs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The in-process agent puts the tests' VIPs on this machine's lo; they all go at the end.
	vips := vip.Loopback()
	server, err := env.Run(ctx, testenv.ControlPlane{AgentNode: "test-node", AgentVIPs: vips,
		Providers: func(mgr ctrl.Manager) map[lbv1.Provider]ipam.Provider {
			static.Provider = ipam.NewStatic(nil, mgr.GetClient())
			return map[lbv1.Provider]ipam.Provider{lbv1.ProviderStatic: static}
		}})
	if err != nil {
		panic(err)
	}
	k8s = env.Client
	// The tests' back ends and VIPs are on this machine's loopback: an administrator's
	// exception to the address rules, and a pool of VIPs for every namespace.
	for _, o := range []client.Object{
		&lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "loopback-lab"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"127.0.0.0/8"}}},
		&lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "tests"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{"127.0.30.0/24"}, AutoAssign: new(bool)}},
	} {
		if err := k8s.Create(ctx, o); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	cancel()
	server.Close()
	vips.Close()
	_ = env.Stop()
	os.Exit(code)
}

var seq atomic.Int32

// setup makes a namespace and a VIP of its own for a test.
func setup(t *testing.T) (string, string) {
	t.Helper()
	n := seq.Add(1)
	ns := fmt.Sprintf("c%d", n)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns, fmt.Sprintf("127.0.30.%d", n)
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func lb(ns, name, addr string) *lbv1.LoadBalancer {
	return &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic, VIP: &lbv1.VIP{Address: addr}}}
}

func listener(ns, name, lbName string, port int32) *lbv1.Listener {
	return &lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: lbName}, Protocol: lbv1.ListenerTCP, ProtocolPort: port}}
}

func pool(ns, name, listenerName string, backends ...*tcptest.Backend) *lbv1.Pool {
	p := &lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: listenerName}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin}}
	for _, b := range backends {
		p.Spec.Members = append(p.Spec.Members, lbv1.Member{Name: b.Name, Address: "127.0.0.1", ProtocolPort: b.Port()})
	}
	return p
}

func monitor(ns, name, poolName string) *lbv1.HealthMonitor {
	return &lbv1.HealthMonitor{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: poolName}, Type: lbv1.MonitorTCP,
			Delay: metav1.Duration{Duration: time.Second}, Timeout: metav1.Duration{Duration: 500 * time.Millisecond}, MaxRetries: 1, MaxRetriesDown: 2}}
}

// eventually retries check until it passes; the limit is generous, this is not a timing test.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type statusOf struct {
	prov lbv1.ProvisioningStatus
	op   lbv1.OperatingStatus
}

func get(t *testing.T, obj client.Object) *lbv1.CommonStatus {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	switch o := obj.(type) {
	case *lbv1.LoadBalancer:
		return &o.Status.CommonStatus
	case *lbv1.Listener:
		return &o.Status.CommonStatus
	case *lbv1.Pool:
		return &o.Status.CommonStatus
	case *lbv1.HealthMonitor:
		return &o.Status.CommonStatus
	}
	panic("kind")
}

// expect waits until obj shows the statuses and, when given, a condition with a reason.
func expect(t *testing.T, obj client.Object, want statusOf, condType, reason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%T %s", obj, obj.GetName()), func() error {
		s := get(t, obj)
		if (want.prov != "" && s.ProvisioningStatus != want.prov) || (want.op != "" && s.OperatingStatus != want.op) {
			return fmt.Errorf("status %s/%s, want %s/%s; conditions %+v", s.ProvisioningStatus, s.OperatingStatus, want.prov, want.op, s.Conditions)
		}
		if condType != "" {
			c := meta.FindStatusCondition(s.Conditions, condType)
			if c == nil || c.Reason != reason {
				return fmt.Errorf("condition %s is %+v, want reason %s", condType, c, reason)
			}
		}
		return nil
	})
}

var activeOnline = statusOf{lbv1.ProvisioningActive, lbv1.OperatingOnline}

// gitops is what kstatus (Flux, kpt, cli-utils) computes for obj as the API server has it.
func gitops(t *testing.T, obj client.Object) kstatus.Status {
	t.Helper()
	gvk, err := apiutil.GVKForObject(obj, k8s.Scheme())
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), u); err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

// update changes obj's spec, retrying when the agent or the controller wrote its status in
// between.
func update(t *testing.T, obj client.Object, change func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change()
		return k8s.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// answers waits until addr answers want: a listener can be Ready a moment before its pool
// reaches the agent, and is then refused.
func answers(t *testing.T, addr, want string) {
	t.Helper()
	eventually(t, addr+" answers "+want, func() error {
		if s, err := fetch(addr); err != nil || s != want {
			return fmt.Errorf("got %q, %v", s, err)
		}
		return nil
	})
}

func fetch(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) == 0 && err == nil {
		err = fmt.Errorf("closed without an answer")
	}
	return string(b), err
}

func TestSeedTreeBecomesReadyAndAlternates(t *testing.T) {
	ns, addr := setup(t)
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	l := lb(ns, "lb", addr)
	create(t, l, listener(ns, "l80", "lb", 80), pool(ns, "p80", "l80", a, b), monitor(ns, "hm", "p80"))
	expect(t, l, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	for _, o := range []client.Object{&lbv1.Listener{}, &lbv1.Pool{}, &lbv1.HealthMonitor{}} {
		o.SetNamespace(ns)
		o.SetName(map[string]string{"*v1alpha1.Listener": "l80", "*v1alpha1.Pool": "p80", "*v1alpha1.HealthMonitor": "hm"}[fmt.Sprintf("%T", o)])
		expect(t, o, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	}
	if l.Status.VIPAddress != addr || l.Status.Holder != "test-node" || l.Status.Listeners != 1 {
		t.Fatalf("status %+v", l.Status)
	}
	var got []string
	for range 4 {
		s, err := fetch(addr + ":80")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if got[0] == got[1] || got[1] == got[2] || got[2] == got[3] {
		t.Fatalf("answers do not alternate: %v", got)
	}
	var p lbv1.Pool
	k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "p80"}, &p)
	if len(p.Status.Members) != 2 || p.Status.Members[0].OperatingStatus != lbv1.OperatingOnline || p.Status.MemberCount != 2 {
		t.Fatalf("member statuses %+v", p.Status.Members)
	}
}

func TestReferencesAppearLate(t *testing.T) {
	ns, addr := setup(t)
	a := tcptest.Named(t, "a")
	p := pool(ns, "p", "l", a)
	create(t, p)
	expect(t, p, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionStalled, lbv1.ReasonReferenceNotFound)
	if c := meta.FindStatusCondition(p.Status.Conditions, lbv1.ConditionAccepted); !strings.Contains(c.Message, `"l"`) {
		t.Fatalf("the message does not name the missing listener: %q", c.Message)
	}
	if s := gitops(t, p); s != kstatus.FailedStatus {
		t.Fatalf("kstatus says %s for a refused pool, want Failed", s)
	}
	l := listener(ns, "l", "lb", 81)
	create(t, l)
	expect(t, l, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionAccepted, lbv1.ReasonReferenceNotFound)
	create(t, lb(ns, "lb", addr))
	expect(t, l, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	expect(t, p, statusOf{prov: lbv1.ProvisioningActive, op: lbv1.OperatingOnline}, lbv1.ConditionAccepted, lbv1.ReasonAccepted)
	for _, o := range []client.Object{l, p} {
		if c := meta.FindStatusCondition(get(t, o).Conditions, lbv1.ConditionStalled); c != nil {
			t.Fatalf("%s is ACTIVE and still Stalled: %+v", o.GetName(), c)
		}
		if s := gitops(t, o); s != kstatus.CurrentStatus {
			t.Fatalf("kstatus says %s for %s, ACTIVE, want Current", s, o.GetName())
		}
	}
	answers(t, addr+":81", "a")
}

func TestAdminStateDownIsOffline(t *testing.T) {
	ns, addr := setup(t)
	a := tcptest.Named(t, "a")
	l := lb(ns, "lb", addr)
	lis := listener(ns, "l", "lb", 82)
	create(t, l, lis, pool(ns, "p", "l", a))
	expect(t, l, activeOnline, "", "")
	update(t, l, func() { l.Spec.AdminStateUp = new(bool) })
	expect(t, l, statusOf{lbv1.ProvisioningActive, lbv1.OperatingOffline}, "", "")
	expect(t, lis, statusOf{op: lbv1.OperatingOffline}, "", "")
	eventually(t, "traffic stops", func() error {
		if s, err := fetch(addr + ":82"); err == nil {
			return fmt.Errorf("still answered %q", s)
		}
		return nil
	})
}

func TestDeletionReleasesAndChildrenReportTheMissingParent(t *testing.T) {
	ns, addr := setup(t)
	a := tcptest.Named(t, "a")
	l := lb(ns, "lb", addr)
	lis := listener(ns, "l", "lb", 83)
	create(t, l, lis, pool(ns, "p", "l", a))
	expect(t, l, activeOnline, "", "")
	if !strings.Contains(strings.Join(l.Finalizers, ","), lbv1.Finalizer) {
		t.Fatalf("finalizers %v", l.Finalizers)
	}
	if err := k8s.Delete(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the load balancer goes", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(l), &lbv1.LoadBalancer{})
		if err == nil {
			return fmt.Errorf("still there")
		}
		return client.IgnoreNotFound(err)
	})
	expect(t, lis, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionAccepted, lbv1.ReasonReferenceNotFound)
	eventually(t, "traffic stops", func() error {
		if s, err := fetch(addr + ":83"); err == nil {
			return fmt.Errorf("still answered %q", s)
		}
		return nil
	})
	// The VIP is free again for another load balancer.
	again := lb(ns, "lb2", addr)
	create(t, again)
	expect(t, again, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionVIPAllocated, lbv1.ReasonAllocated)
}

func TestSameVIPTwiceIsRefused(t *testing.T) {
	ns, addr := setup(t)
	first, second := lb(ns, "first", addr), lb(ns, "second", addr)
	create(t, first)
	expect(t, first, statusOf{prov: lbv1.ProvisioningActive}, lbv1.ConditionVIPAllocated, lbv1.ReasonAllocated)
	create(t, second)
	expect(t, second, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionVIPAllocated, lbv1.ReasonAddressInUse)
}

func TestPortConflictRefusedWhileTheOtherServes(t *testing.T) {
	ns, addr := setup(t)
	a := tcptest.Named(t, "a")
	l := lb(ns, "lb", addr)
	first := listener(ns, "first", "lb", 84)
	create(t, l, first, pool(ns, "p", "first", a))
	expect(t, first, activeOnline, "", "")
	dup := listener(ns, "dup", "lb", 84)
	create(t, dup)
	expect(t, dup, statusOf{prov: lbv1.ProvisioningError}, lbv1.ConditionAccepted, lbv1.ReasonPortConflict)
	expect(t, first, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	answers(t, addr+":84", "a")
}

func TestBindFailureReportedOnTheListener(t *testing.T) {
	ns, addr := setup(t)
	a := tcptest.Named(t, "a")
	// Something else already listens on the VIP's port 85.
	squatter, err := net.Listen("tcp", addr+":85")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	l := lb(ns, "lb", addr)
	bad, good := listener(ns, "bad", "lb", 85), listener(ns, "good", "lb", 86)
	create(t, l, bad, good, pool(ns, "pb", "bad", a), pool(ns, "pg", "good", a))
	expect(t, bad, statusOf{lbv1.ProvisioningError, lbv1.OperatingError}, lbv1.ConditionProgrammed, lbv1.ReasonBindFailed)
	if c := meta.FindStatusCondition(get(t, bad).Conditions, lbv1.ConditionProgrammed); !strings.Contains(c.Message, "address already in use") {
		t.Fatalf("message %q", c.Message)
	}
	expect(t, good, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	answers(t, addr+":86", "a")
	// Freed, it heals by itself.
	squatter.Close()
	update(t, bad, func() {
		bad.Spec.ConnectionLimit = new(int32)
		*bad.Spec.ConnectionLimit = 100
	})
	expect(t, bad, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
}

func TestMemberHealthCascades(t *testing.T) {
	ns, addr := setup(t)
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	l := lb(ns, "lb", addr)
	lis := listener(ns, "l", "lb", 87)
	p := pool(ns, "p", "l", a, b)
	create(t, l, lis, p, monitor(ns, "hm", "p"))
	expect(t, l, activeOnline, "", "")
	a.Stop()
	expect(t, p, statusOf{lbv1.ProvisioningActive, lbv1.OperatingDegraded}, "", "")
	expect(t, l, statusOf{lbv1.ProvisioningActive, lbv1.OperatingDegraded}, "", "")
	for range 4 {
		if s, err := fetch(addr + ":87"); err != nil || s != "b" {
			t.Fatalf("traffic went to the failed member: %q, %v", s, err)
		}
	}
	b.Stop()
	expect(t, l, statusOf{lbv1.ProvisioningActive, lbv1.OperatingError}, "", "")
	a.Restart(t)
	b.Restart(t)
	expect(t, p, activeOnline, "", "")
	expect(t, l, activeOnline, "", "")
}

func TestRemovedMemberDrains(t *testing.T) {
	ns, addr := setup(t)
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	// c keeps its connections open until released, to show they survive its removal.
	release, accepted := make(chan struct{}), make(chan struct{}, 16)
	c := tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		accepted <- struct{}{}
		<-release
		c.Write([]byte("c"))
	})
	c.Name = "c"
	l, ln := lb(ns, "lb", addr), listener(ns, "l", "lb", 88)
	p := pool(ns, "p", "l", c)
	create(t, l, ln, p)
	expect(t, l, activeOnline, "", "")
	// Serving starts once the agent has the pool: a client that came before would be
	// refused, which is not what this test is about.
	for _, o := range []client.Object{ln, p} {
		expect(t, o, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
	}
	open, err := net.Dial("tcp", addr+":88")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	select { // the proxy has connected it to c
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not connect the client to c")
	}
	update(t, p, func() { p.Spec.Members = pool(ns, "p", "l", a, b).Spec.Members })
	eventually(t, "new connections avoid the removed member", func() error {
		for range 4 {
			if s, err := fetch(addr + ":88"); err != nil || s == "c" {
				return fmt.Errorf("got %q, %v", s, err)
			}
		}
		return nil
	})
	close(release)
	open.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(open); err != nil || string(got) != "c" {
		t.Fatalf("the connection to the removed member was cut: %q, %v", got, err)
	}
}

// TestRecreatedObjectsGetTheirStatus: a Listener, Pool and HealthMonitor deleted and created
// again with the same names and specs (so the same generation) are new objects, and the
// dataplane must report them as it did the first ones.
func TestRecreatedObjectsGetTheirStatus(t *testing.T) {
	ns, addr := setup(t)
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	l := lb(ns, "lb", addr)
	create(t, l)
	tree := func() []client.Object {
		return []client.Object{listener(ns, "l", "lb", 89), pool(ns, "p", "l", a, b), monitor(ns, "hm", "p")}
	}
	for round := range 3 {
		objs := tree()
		create(t, objs...)
		for _, o := range objs {
			expect(t, o, activeOnline, lbv1.ConditionReady, lbv1.ReasonReady)
		}
		answers(t, addr+":89", "a")
		if round == 2 {
			break
		}
		for _, o := range objs {
			if err := k8s.Delete(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		}
		for _, o := range objs {
			eventually(t, fmt.Sprintf("%T %s goes", o, o.GetName()), func() error {
				if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(o), o); err == nil {
					return fmt.Errorf("still there")
				}
				return nil
			})
		}
	}
}

// TestStatusChangesDoNotCallTheProvider: once a load balancer's VIP is confirmed, the
// reconciles that the dataplane's status writes trigger (member health here) ask the
// provider nothing; a change of the spec does.
func TestStatusChangesDoNotCallTheProvider(t *testing.T) {
	ns, addr := setup(t)
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	l := lb(ns, "lb", addr)
	p := pool(ns, "p", "l", a, b)
	create(t, l, listener(ns, "l", "lb", 90), p, monitor(ns, "hm", "p"))
	expect(t, l, activeOnline, lbv1.ConditionSynced, lbv1.ReasonSynced)
	calls := static.of(l.UID)
	a.Stop()
	expect(t, l, statusOf{lbv1.ProvisioningActive, lbv1.OperatingDegraded}, "", "")
	a.Restart(t)
	expect(t, l, activeOnline, "", "")
	if n := static.of(l.UID); n != calls {
		t.Fatalf("the provider was called %d times for status changes alone", n-calls)
	}
	update(t, l, func() { l.Spec.Description = "changed" })
	eventually(t, "a spec change syncs", func() error {
		if static.of(l.UID) == calls {
			return fmt.Errorf("no call")
		}
		return nil
	})
}
