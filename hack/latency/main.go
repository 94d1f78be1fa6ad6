// Command latency measures the control plane on a real kube-apiserver with the l4lb
// controller and one dataplane agent: for N load balancers (default 20), the time from
// applying a LoadBalancer, Listener and Pool to the VIP answering, and from changing a pool's
// members to the new member being served. `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/test/testenv"
)

func main() {
	n := flag.Int("n", 20, "load balancers")
	withOpenStack := flag.Bool("openstack", false, "measure apply -> floating IP associated against the local Neutron (hack/openstack.sh, as root)")
	withOctavia := flag.Bool("octavia", false, "measure the Octavia API against Neutron's API on the local Keystone (hack/openstack.sh, as root)")
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	run := run
	if *withOpenStack {
		run = runOpenStack
	}
	if *withOctavia {
		run = runOctavia
	}
	if err := withControlPlane(*n, run); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// withControlPlane runs measure against a real API server started for it.
func withControlPlane(n int, measure func(context.Context, *testenv.Env, int) error) error {
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	return measure(ctx, env, n)
}

// server answers each connection with its name.
func server(name string) (int32, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
	return int32(ln.Addr().(*net.TCPAddr).Port), func() { ln.Close() }
}

func fetch(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// waitFor polls until fetch(addr) returns want, and returns when it first did.
func waitFor(addr, want string, limit time.Duration) (time.Time, error) {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		if fetch(addr) == want {
			return time.Now(), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%s never answered %q", addr, want)
}

func run(ctx context.Context, env *testenv.Env, n int) error {
	engine, err := env.Run(ctx, testenv.ControlPlane{AgentNode: "bench", AgentVIPs: vip.Loopback()})
	if err != nil {
		return err
	}
	defer engine.Close()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
		return err
	}
	first, stopFirst := server("first")
	defer stopFirst()
	second, stopSecond := server("second")
	defer stopSecond()
	time.Sleep(time.Second) // caches synced
	// Back ends and VIPs on this machine's loopback: an administrator's lab.
	for _, o := range []client.Object{
		&lbv1.AddressPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: lbv1.AddressPolicySpec{Allow: []string{"127.0.0.0/8"}}},
		&lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{"127.0.40.0/24"}}},
	} {
		if err := c.Create(ctx, o); err != nil {
			return err
		}
	}

	var apply, change []time.Duration
	for i := range n {
		name := fmt.Sprintf("lb%d", i)
		addr := fmt.Sprintf("127.0.40.%d", i+1)
		start := time.Now()
		objs := []client.Object{
			&lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic, VIP: &lbv1.VIP{Address: addr}}},
			&lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: name}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}},
			&lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: name}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
					Members: []lbv1.Member{{Name: "first", Address: "127.0.0.1", ProtocolPort: first}}}},
		}
		for _, o := range objs {
			if err := c.Create(ctx, o); err != nil {
				return err
			}
		}
		at, err := waitFor(addr+":80", "first", 30*time.Second)
		if err != nil {
			return err
		}
		apply = append(apply, at.Sub(start))
	}
	for i := range n {
		name := fmt.Sprintf("lb%d", i)
		var p lbv1.Pool
		if err := c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: name}, &p); err != nil {
			return err
		}
		p.Spec.Members = []lbv1.Member{{Name: "second", Address: "127.0.0.1", ProtocolPort: second}}
		start := time.Now()
		if err := c.Update(ctx, &p); err != nil {
			return err
		}
		at, err := waitFor(fmt.Sprintf("127.0.40.%d:80", i+1), "second", 30*time.Second)
		if err != nil {
			return err
		}
		change = append(change, at.Sub(start))
	}
	fmt.Printf("| control plane, %d load balancers | p50 | p99 | max |\n|---|---|---|---|\n", n)
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{{"apply LoadBalancer + Listener + Pool -> VIP answers", apply}, {"member change -> new member served", change}} {
		slices.Sort(row.d)
		fmt.Printf("| %s | %v | %v | %v |\n", row.name, pct(row.d, 50), pct(row.d, 99), row.d[len(row.d)-1])
	}
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	return d[max(0, min(len(d)-1, i-1))].Round(time.Millisecond)
}
