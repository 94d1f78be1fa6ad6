package model

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

func meta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}
}

func ptr[T any](v T) *T { return &v }

func seed() Objects {
	return Objects{
		LoadBalancers: []lbv1.LoadBalancer{{ObjectMeta: meta("lb", 0), Status: lbv1.LoadBalancerStatus{VIPAddress: "198.51.100.1"}}},
		Listeners: []lbv1.Listener{
			{ObjectMeta: meta("l80", 1), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: "TCP", ProtocolPort: 80}},
		},
		Pools: []lbv1.Pool{{ObjectMeta: meta("p80", 2), Spec: lbv1.PoolSpec{
			ListenerRef: &lbv1.ObjectReference{Name: "l80"}, Protocol: "TCP", LBAlgorithm: "ROUND_ROBIN",
			Members: []lbv1.Member{
				{Name: "b", Address: "203.0.113.12", ProtocolPort: 8080, MonitorPort: ptr(int32(9000))},
				{Name: "a", Address: "203.0.113.11", ProtocolPort: 8080, Weight: ptr(int32(3))},
			}}}},
		Monitors: []lbv1.HealthMonitor{{ObjectMeta: meta("hm", 3), Spec: lbv1.HealthMonitorSpec{
			PoolRef: lbv1.ObjectReference{Name: "p80"}, Type: "HTTP", Delay: metav1.Duration{Duration: time.Minute},
			Timeout: metav1.Duration{Duration: 20 * time.Second}, MaxRetries: 2, URLPath: "/health"}}},
	}
}

func TestBuildSeed(t *testing.T) {
	res := Build(seed())
	if len(res.Problems) != 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	if len(res.Model.Listeners) != 1 {
		t.Fatalf("listeners: %+v", res.Model.Listeners)
	}
	l := res.Model.Listeners[0]
	if l.Address != netip.MustParseAddrPort("198.51.100.1:80") || l.ConnectionLimit != DefaultConnectionLimit ||
		l.TimeoutClientData != 50*time.Second || l.TimeoutMemberConnect != 5*time.Second || l.LoadBalancer != "ns/lb" {
		t.Fatalf("listener: %+v", l)
	}
	p := l.Pool
	if p == nil || len(p.Members) != 2 || p.Members[0].Name != "a" || p.Members[0].Weight != 3 || p.Members[1].Weight != 1 {
		t.Fatalf("pool: %+v", p)
	}
	if p.Members[1].MonitorAddress != netip.MustParseAddrPort("203.0.113.12:9000") || p.Members[0].MonitorAddress != p.Members[0].Address {
		t.Fatalf("monitor addresses: %+v", p.Members)
	}
	m := p.Monitor
	if m == nil || m.Rise != 2 || m.Fall != 3 || m.HTTPMethod != "GET" || m.HTTPVersion != "1.0" || !m.ExpectedCodes.Match(200) || m.ExpectedCodes.Match(201) {
		t.Fatalf("monitor: %+v", m)
	}
}

func TestBuildProblemsLeaveTheRestServing(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*Objects)
		ref     Ref
		reason  string
		serving int // listeners still in the model
	}{
		{"listener without load balancer", func(o *Objects) {
			o.Listeners = append(o.Listeners, lbv1.Listener{ObjectMeta: meta("lx", 5), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "nope"}, Protocol: "TCP", ProtocolPort: 81}})
		}, Ref{"Listener", "ns", "lx"}, lbv1.ReasonReferenceNotFound, 1},
		{"port already used", func(o *Objects) {
			o.Listeners = append(o.Listeners, lbv1.Listener{ObjectMeta: meta("dup", 5), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: "TCP", ProtocolPort: 80}})
		}, Ref{"Listener", "ns", "dup"}, lbv1.ReasonPortConflict, 1},
		{"same port other protocol is fine", func(o *Objects) {
			o.Listeners = append(o.Listeners, lbv1.Listener{ObjectMeta: meta("udp", 5), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: "UDP", ProtocolPort: 80}})
		}, Ref{}, "", 2},
		{"udp pool on tcp listener", func(o *Objects) { o.Pools[0].Spec.Protocol = "UDP" }, Ref{"Pool", "ns", "p80"}, lbv1.ReasonProtocolMismatch, 1},
		{"second pool on a listener", func(o *Objects) {
			p := o.Pools[0]
			p.ObjectMeta = meta("p2", 9)
			o.Pools = append(o.Pools, p)
		}, Ref{"Pool", "ns", "p2"}, lbv1.ReasonDuplicate, 1},
		{"pool on a load balancer that is not there", func(o *Objects) {
			o.Pools[0].Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: "nope"}
		}, Ref{"Pool", "ns", "p80"}, lbv1.ReasonReferenceNotFound, 1},
		{"pool whose listener is on another load balancer", func(o *Objects) {
			o.LoadBalancers = append(o.LoadBalancers, lbv1.LoadBalancer{ObjectMeta: meta("lb2", 0)})
			o.Pools[0].Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: "lb2"}
		}, Ref{"Pool", "ns", "p80"}, lbv1.ReasonInvalid, 1},
		{"udp-connect on tcp pool", func(o *Objects) { o.Monitors[0].Spec.Type = "UDP-CONNECT" }, Ref{"HealthMonitor", "ns", "hm"}, lbv1.ReasonProtocolMismatch, 1},
		{"monitor without pool", func(o *Objects) { o.Monitors[0].Spec.PoolRef.Name = "gone" }, Ref{"HealthMonitor", "ns", "hm"}, lbv1.ReasonReferenceNotFound, 1},
		{"backwards code range", func(o *Objects) { o.Monitors[0].Spec.ExpectedCodes = "204-200" }, Ref{"HealthMonitor", "ns", "hm"}, lbv1.ReasonInvalid, 1},
		{"load balancer without vip yet", func(o *Objects) { o.LoadBalancers[0].Status.VIPAddress = "" }, Ref{}, "", 0},
		{"load balancer admin down", func(o *Objects) { o.LoadBalancers[0].Spec.AdminStateUp = ptr(false) }, Ref{}, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := seed()
			tc.mutate(&o)
			res := Build(o)
			if tc.reason == "" && len(res.Problems) != 0 {
				t.Fatalf("unexpected problems %v", res.Problems)
			}
			if tc.reason != "" {
				if got := res.Problems[tc.ref]; got.Reason != tc.reason || got.Message == "" {
					t.Fatalf("problem of %v = %+v, want %s; all: %v", tc.ref, got, tc.reason, res.Problems)
				}
				for ref, p := range res.Problems {
					if ref != tc.ref && p.Message != fmt.Sprintf("%s %q is not accepted", tc.ref.Kind, tc.ref.Name) {
						t.Fatalf("one bad object spread: %v", res.Problems)
					}
				}
			}
			if len(res.Model.Listeners) != tc.serving {
				t.Fatalf("serving %d listeners, want %d", len(res.Model.Listeners), tc.serving)
			}
		})
	}
}

func TestAdminDownPoolAndMonitor(t *testing.T) {
	o := seed()
	o.Monitors[0].Spec.AdminStateUp = ptr(false)
	if p := Build(o).Model.Listeners[0].Pool; p == nil || p.Monitor != nil {
		t.Fatalf("disabled monitor still checks: %+v", p)
	}
	o.Pools[0].Spec.AdminStateUp = ptr(false)
	if l := Build(o).Model.Listeners[0]; l.Pool != nil {
		t.Fatalf("disabled pool still serves")
	}
}

// As in Octavia, a pool belongs to a load balancer and may wait there for a listener: it is
// accepted, with its monitor, and serves nothing until a listener takes it.
func TestPoolWithoutListener(t *testing.T) {
	o := seed()
	o.Pools[0].Spec.ListenerRef = nil
	o.Pools[0].Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: "lb"}
	res := Build(o)
	if len(res.Problems) != 0 || len(res.Model.Listeners) != 1 || res.Model.Listeners[0].Pool != nil {
		t.Fatalf("problems %v, listeners %+v", res.Problems, res.Model.Listeners)
	}
	if got := PoolLoadBalancer(&o.Pools[0], o.Listeners); got != "lb" {
		t.Fatalf("the pool's load balancer: %q", got)
	}
	o.Pools[0].Spec.ListenerRef = &lbv1.ObjectReference{Name: "l80"}
	if l := Build(o).Model.Listeners[0]; l.Pool == nil || l.Pool.Monitor == nil {
		t.Fatalf("a listener taking the pool does not serve it: %+v", l)
	}
	o.Pools[0].Spec.LoadBalancerRef = nil // a pool written before pools named their load balancer
	if got := PoolLoadBalancer(&o.Pools[0], o.Listeners); got != "lb" {
		t.Fatalf("the load balancer of a pool named by its listener: %q", got)
	}
}

func TestPersistenceGranularity(t *testing.T) {
	o := seed()
	o.Pools[0].Spec.SessionPersistence = &lbv1.SessionPersistence{Type: "SOURCE_IP", PersistenceGranularity: "255.255.255.0"}
	p := Build(o).Model.Listeners[0].Pool
	if p.Persistence == nil || p.Persistence.Bits != 24 || p.Persistence.Timeout != 360*time.Second {
		t.Fatalf("persistence %+v", p.Persistence)
	}
	o.Pools[0].Spec.SessionPersistence.PersistenceGranularity = "255.0.255.0"
	if r := Build(o); r.Problems[Ref{"Pool", "ns", "p80"}].Reason != lbv1.ReasonInvalid {
		t.Fatalf("non-contiguous mask accepted: %v", r.Problems)
	}
}

func TestAllowed(t *testing.T) {
	cidrs, err := ParseCIDRs([]string{"127.0.0.1/32", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	l := Listener{AllowedCIDRs: cidrs}
	for addr, want := range map[string]bool{"127.0.0.1": true, "127.0.0.2": false, "::ffff:127.0.0.1": true, "2001:db8::5": true, "2001:db9::5": false} {
		if got := l.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allowed(%s) = %v", addr, got)
		}
	}
	if !(&Listener{}).Allowed(netip.MustParseAddr("198.51.100.1")) {
		t.Error("an empty list must allow every source")
	}
}

func TestIncumbentKeepsItsPortWithinTheSameSecond(t *testing.T) {
	o := seed()
	dup := lbv1.Listener{ObjectMeta: meta("a-dup", 1), Spec: o.Listeners[0].Spec} // same second, sorts first by name
	o.Listeners[0].Status.Conditions = []metav1.Condition{{Type: lbv1.ConditionAccepted, Status: metav1.ConditionTrue}}
	o.Listeners = append(o.Listeners, dup)
	res := Build(o)
	if res.Problems[Ref{"Listener", "ns", "a-dup"}].Reason != lbv1.ReasonPortConflict {
		t.Fatalf("the newcomer took the port: %v", res.Problems)
	}
}

// trafficPolicy Local: each node serves only its own members; MemberNodes says where they run.
func TestLocalTrafficStaysOnTheNode(t *testing.T) {
	objs := seed()
	objs.Pools[0].Spec.Members[0].NodeName = "n1"
	objs.Pools[0].Spec.Members[1].NodeName = "n2"
	res := Build(objs)
	if got := len(res.Model.LocalTo("n1").Listeners[0].Pool.Members); got != 2 {
		t.Fatalf("Cluster: %d members on n1, want both", got)
	}
	objs.LoadBalancers[0].Spec.TrafficPolicy = lbv1.TrafficLocal
	res = Build(objs)
	on1 := res.Model.LocalTo("n1")
	if ms := on1.Listeners[0].Pool.Members; len(ms) != 1 || ms[0].Name != "b" {
		t.Fatalf("Local on n1: members %+v, want b alone", ms)
	}
	if len(res.Model.Listeners[0].Pool.Members) != 2 {
		t.Fatal("LocalTo changed the model it was given")
	}
	if ms := res.Model.LocalTo("n3").Listeners[0].Pool.Members; len(ms) != 0 {
		t.Fatalf("Local on a node without members: %+v", ms)
	}
	nodes := MemberNodes(objs)
	if len(nodes["ns/lb"]) != 2 || !nodes["ns/lb"]["n1"] || !nodes["ns/lb"]["n2"] {
		t.Fatalf("member nodes %v", nodes)
	}
	objs.Pools[0].Spec.Members[1].Weight = ptr(int32(0)) // draining: takes no new traffic
	if nodes := MemberNodes(objs); len(nodes["ns/lb"]) != 1 {
		t.Fatalf("a draining member's node counted: %v", nodes)
	}
}

func TestTreesGroupObjectsByTheirLoadBalancer(t *testing.T) {
	objs := Objects{
		Listeners: []lbv1.Listener{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "l1"}, Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb1"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "l1"}, Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb2"}}},
		},
		Pools: []lbv1.Pool{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "via-listener"}, Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "l1"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "via-listener"}, Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "l1"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "named"}, Spec: lbv1.PoolSpec{LoadBalancerRef: &lbv1.ObjectReference{Name: "lb3"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "orphan"}, Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "gone"}}},
		},
		Monitors: []lbv1.HealthMonitor{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "m"}, Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: "via-listener"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "m"}, Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: "orphan"}}},
		},
	}
	tr := TreesOf(objs)
	for _, tc := range []struct{ got, want string }{
		{keysOf(tr.Listeners["a/lb1"]), "a/l1"},
		{keysOf(tr.Pools["a/lb1"]), "a/via-listener"},
		{keysOf(tr.Pools["b/lb2"]), "b/via-listener"},
		{keysOf(tr.Pools["a/lb3"]), "a/named"},
		{keysOf(tr.Monitors["b/lb2"]), "b/m"},
		{keysOf(tr.Monitors["a/lb1"]), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	// Every pool PoolLoadBalancer places is where Trees puts it.
	for i := range objs.Pools {
		p := &objs.Pools[i]
		lb := PoolLoadBalancer(p, objs.Listeners)
		if found := slices.Contains(tr.Pools[p.Namespace+"/"+lb], p); found != (lb != "") {
			t.Errorf("pool %s/%s: in the tree of %q: %v", p.Namespace, p.Name, lb, found)
		}
	}
}

func keysOf[T metav1.Object](objs []T) string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	return strings.Join(out, ",")
}

// BenchmarkBuild is one build of the model of 1,000 load balancers of the scale bench's shape
// (test/scale: two listeners, each with a pool of four members), accepted and with VIPs, created
// over a minute (creation times have one-second resolution): what the controller and each agent
// pay for every build (docs/benchmarks.md, "Scale").
func BenchmarkBuild(b *testing.B) {
	var objs Objects
	accepted := []metav1.Condition{{Type: lbv1.ConditionAccepted, Status: metav1.ConditionTrue}}
	for i := range 1000 {
		lb := fmt.Sprintf("lb%d", i)
		age := i * 60 / 1000
		objs.LoadBalancers = append(objs.LoadBalancers, lbv1.LoadBalancer{ObjectMeta: meta(lb, age),
			Status: lbv1.LoadBalancerStatus{VIPAddress: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)}})
		for _, port := range []int32{80, 443} {
			name := fmt.Sprintf("%s-%d", lb, port)
			var members []lbv1.Member
			for m := range 4 {
				members = append(members, lbv1.Member{Name: fmt.Sprintf("m%d", m), Address: fmt.Sprintf("203.0.113.%d", 20+m), ProtocolPort: 8080})
			}
			l := lbv1.Listener{ObjectMeta: meta(name, age), Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: lb}, Protocol: TCP, ProtocolPort: port}}
			l.Status.Conditions = accepted
			objs.Listeners = append(objs.Listeners, l)
			objs.Pools = append(objs.Pools, lbv1.Pool{ObjectMeta: meta(name, age),
				Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: name}, Protocol: PoolTCP, LBAlgorithm: RoundRobin, Members: members}})
		}
	}
	// In a cache's order, as the controller and the agents read them: not by age.
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(objs.LoadBalancers), func(i, j int) {
		objs.LoadBalancers[i], objs.LoadBalancers[j] = objs.LoadBalancers[j], objs.LoadBalancers[i]
	})
	r.Shuffle(len(objs.Listeners), func(i, j int) { objs.Listeners[i], objs.Listeners[j] = objs.Listeners[j], objs.Listeners[i] })
	r.Shuffle(len(objs.Pools), func(i, j int) { objs.Pools[i], objs.Pools[j] = objs.Pools[j], objs.Pools[i] })
	b.ResetTimer()
	for b.Loop() {
		if res := Build(objs); len(res.Model.Listeners) != 2000 || len(res.Problems) != 0 {
			b.Fatalf("%d listeners served, problems %v", len(res.Model.Listeners), res.Problems)
		}
	}
}
