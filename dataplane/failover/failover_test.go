package failover

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/controllers/testenv"
)

const backendEnv = "L4LB_FAILOVER_BACKEND"

// TestMain doubles as a back-end: re-executed inside a namespace with
// L4LB_FAILOVER_BACKEND=name[:port], it answers every connection on the port (8080 by
// default) with its name.
func TestMain(m *testing.M) {
	if name := os.Getenv(backendEnv); name != "" {
		port := "8080"
		if n, p, ok := strings.Cut(name, ":"); ok {
			name, port = n, p
		}
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			c.Write([]byte(name))
			c.Close()
		}
	}
	os.Exit(m.Run())
}

const vipAddr = "192.0.2.100"

type agentProc struct {
	node string
	cmd  *exec.Cmd
	fwd  *forwarder
	log  string
}

// TestVIPFailover runs two dataplane agents on two hosts (network namespaces on one LAN) with
// a client and two members, against a real API server and the controller, and proves: one
// node answers the VIP and the client's neighbour table points at it; when that node dies the
// other answers new connections (the gap is printed); a planned move refuses no connection;
// a slow API server moves nothing; a holder cut off from the API server gives the VIP up, and
// never do both nodes hold it.
func TestVIPFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	ctrl.SetLogger(logr.Discard())
	tp := newTopology(t, map[string]string{
		"n1": "192.0.2.1", "n2": "192.0.2.2", "m1": "192.0.2.11", "m2": "192.0.2.12", "client": "192.0.2.50",
	})
	bin := filepath.Join(t.TempDir(), "l4lb")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(testenv.Root())).CombinedOutput(); err != nil {
		t.Fatalf("building l4lb: %v\n%s", err, out)
	}
	for _, m := range []string{"m1", "m2"} {
		cmd := exec.Command("ip", "netns", "exec", tp.hosts[m].ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), backendEnv+"="+m)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}

	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	k8s := env.Client
	for _, ns := range []string{"l4lb-system", "app"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Run(ctx, testenv.ControlPlane{}); err != nil {
		t.Fatal(err)
	}

	apiURL, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	api := apiURL.Host
	agents := map[string]*agentProc{}
	start := func(node string) {
		a := agents[node]
		if a == nil {
			a = &agentProc{node: node, log: filepath.Join(t.TempDir(), node+".log")}
			agents[node] = a
		}
		h := tp.hosts[node]
		a.fwd = forward(t, h, 16443, api)
		kc, err := env.Kubeconfig("https://127.0.0.1:16443")
		if err != nil {
			t.Fatal(err)
		}
		kcPath := filepath.Join(t.TempDir(), node+".kubeconfig")
		os.WriteFile(kcPath, kc, 0o600)
		logf, _ := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		a.cmd = exec.Command("ip", "netns", "exec", h.ns, bin, "dataplane", "--kubeconfig", kcPath, "--node-name", node,
			"--vip-interface", "eth0", "--lease-namespace", "l4lb-system", "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
		a.cmd.Stdout, a.cmd.Stderr = logf, logf
		if err := a.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.cmd.Process.Kill(); a.cmd.Wait() })
	}
	start("n1")
	start("n2")

	lb := &lbv1.LoadBalancer{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "lb"},
		Spec: lbv1.LoadBalancerSpec{Provider: lbv1.ProviderStatic, VIP: &lbv1.VIP{Address: vipAddr}}}
	objs := []client.Object{
		&lbv1.VIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: lbv1.VIPPoolSpec{Addresses: []string{vipAddr + "/32"}}},
		lb,
		&lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "l"},
			Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.ListenerTCP, ProtocolPort: 80}},
		&lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"},
			Spec: lbv1.PoolSpec{ListenerRef: lbv1.ObjectReference{Name: "l"}, Protocol: lbv1.PoolTCP, LBAlgorithm: lbv1.RoundRobin,
				Members: []lbv1.Member{{Name: "m1", Address: "192.0.2.11", ProtocolPort: 8080}, {Name: "m2", Address: "192.0.2.12", ProtocolPort: 8080}}}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cl := tp.hosts["client"]
	target := vipAddr + ":80"
	dumpLogs := func() {
		for _, a := range agents {
			log, _ := os.ReadFile(a.log)
			t.Logf("agent %s log tail:\n%s", a.node, tail(string(log), 12))
		}
	}
	waitServed := func(what string) {
		t.Helper()
		end := time.Now().Add(30 * time.Second)
		for {
			if s, err := cl.fetch(target, time.Second); err == nil && (s == "m1" || s == "m2") {
				return
			}
			if time.Now().After(end) {
				dumpLogs()
				t.Fatalf("%s: the VIP does not answer the client", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	holder := func() string {
		t.Helper()
		var cur lbv1.LoadBalancer
		k8s.Get(ctx, client.ObjectKeyFromObject(lb), &cur)
		return cur.Status.Holder
	}
	waitHolder := func(not string) string {
		t.Helper()
		end := time.Now().Add(30 * time.Second)
		for {
			h := holder()
			if h != "" && h != not && tp.hosts[h].has(vipAddr) {
				return h
			}
			if time.Now().After(end) {
				dumpLogs()
				t.Fatalf("no holder other than %q; status says %q", not, h)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	waitServed("start")
	first := waitHolder("")
	other := func(n string) string { return map[string]string{"n1": "n2", "n2": "n1"}[n] }
	if tp.hosts[other(first)].has(vipAddr) {
		t.Fatalf("both nodes hold the VIP")
	}
	if got := cl.neighbour(vipAddr); got != tp.hosts[first].mac(t) {
		t.Fatalf("the client's neighbour entry for the VIP is %q, the holder %s has %s", got, first, tp.hosts[first].mac(t))
	}

	// 1. The holder dies: its agent is killed and its link goes down, as a dead node's would.
	traffic := newClientLoop(cl, target)
	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	agents[first].cmd.Process.Kill()
	sh(t, "ip", "-n", tp.hosts[first].ns, "link", "set", "eth0", "down")
	second := waitHolder(first)
	gap := traffic.firstSuccessAfter(t, killedAt, 20*time.Second)
	traffic.stop()
	t.Logf("failover: holder %s killed, %s took over; new connections answered again after %v", first, second, gap.Round(time.Millisecond))
	fmt.Printf("failover gap (l4lb, unplanned, default lease): %v\n", gap.Round(time.Millisecond))
	if got := cl.neighbour(vipAddr); got != tp.hosts[second].mac(t) {
		t.Fatalf("the client's neighbour entry %q does not follow the VIP to %s (%s)", got, second, tp.hosts[second].mac(t))
	}

	// The dead node comes back (its stale address gone, as after a reboot).
	exec.Command("ip", "-n", tp.hosts[first].ns, "addr", "del", vipAddr+"/32", "dev", "eth0").Run()
	sh(t, "ip", "-n", tp.hosts[first].ns, "link", "set", "eth0", "up")
	agents[first].cmd.Wait()
	agents[first].fwd.cut()
	start(first)
	time.Sleep(2 * time.Second) // both live

	// 2. A planned move: the holder is stopped with SIGTERM; no new connection is refused.
	cur := waitHolder("")
	traffic = newClientLoop(cl, target)
	time.Sleep(300 * time.Millisecond)
	agents[cur].cmd.Process.Signal(syscall.SIGTERM)
	next := waitHolder(cur)
	time.Sleep(time.Second)
	ok, refused, cut := traffic.stop()
	t.Logf("planned move %s -> %s: %d connections answered, %d refused, %d cut once established", cur, next, ok, refused, cut)
	fmt.Printf("planned move: %d connections answered, %d refused, %d established ones cut\n", ok, refused, cut)
	if refused != 0 || ok == 0 {
		t.Fatalf("planned move: %d of %d new connections refused", refused, ok+refused+cut)
	}
	agents[cur].cmd.Wait()
	agents[cur].fwd.cut()
	start(cur)
	time.Sleep(2 * time.Second)

	// 3. The API server turns slow (75 ms more each way: 150 ms a round trip, a hundred times
	// the loopback's) for every node: renewals still succeed, so the VIP stays where it is.
	cur = waitHolder("")
	for _, a := range agents {
		a.fwd.delay.Store(int64(75 * time.Millisecond))
	}
	stayed := true
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !tp.hosts[cur].has(vipAddr) || tp.hosts[other(cur)].has(vipAddr) {
			stayed = false
		}
	}
	for _, a := range agents {
		a.fwd.delay.Store(0)
	}
	if !stayed {
		dumpLogs()
		t.Fatal("the VIP moved while the API server was slow")
	}

	// 4. The holder is cut off from the API server: it gives the VIP up, the other takes it,
	// and at no moment do both hold it.
	cur = waitHolder("")
	peer := other(cur)
	var both atomic.Bool
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		end := time.Now().Add(6 * time.Second)
		for time.Now().Before(end) {
			if tp.hosts[cur].has(vipAddr) && tp.hosts[peer].has(vipAddr) {
				both.Store(true)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	agents[cur].fwd.cut()
	<-watchDone
	if tp.hosts[cur].has(vipAddr) {
		t.Fatalf("the partitioned holder %s still holds the VIP", cur)
	}
	if !tp.hosts[peer].has(vipAddr) {
		t.Fatalf("%s did not take the VIP from the partitioned %s", peer, cur)
	}
	if both.Load() {
		t.Fatal("both nodes held the VIP at once during the partition")
	}
	waitServed("after the partition")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clientLoop connects to the VIP from the client, one connection after another.
type clientLoop struct {
	mu       sync.Mutex
	results  []result
	done     chan struct{}
	finished chan struct{}
}

type result struct {
	start, end time.Time
	ok         bool
	err        error
}

func newClientLoop(h *host, target string) *clientLoop {
	l := &clientLoop{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(l.finished)
		for {
			select {
			case <-l.done:
				return
			default:
			}
			start := time.Now()
			s, err := h.fetch(target, 5*time.Second)
			l.mu.Lock()
			l.results = append(l.results, result{start, time.Now(), err == nil && s != "", err})
			l.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return l
}

// firstSuccessAfter waits for a connection started after t0 to succeed and returns how long
// after t0 it was answered.
func (l *clientLoop) firstSuccessAfter(t *testing.T, t0 time.Time, limit time.Duration) time.Duration {
	t.Helper()
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		l.mu.Lock()
		for _, r := range l.results {
			if r.ok && r.start.After(t0) {
				l.mu.Unlock()
				return r.end.Sub(t0)
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no connection succeeded within %v of the failure", limit)
	return 0
}

// stop ends the loop and counts the connections answered, those refused (the connect
// failed), and those cut after they were established.
func (l *clientLoop) stop() (ok, refused, cut int) {
	close(l.done)
	<-l.finished
	for _, r := range l.results {
		switch {
		case r.ok:
			ok++
		case strings.HasPrefix(fmt.Sprint(r.err), "dial "):
			refused++
			fmt.Printf("connection at %s refused after %v: %v\n", r.start.Format("15:04:05.000"), r.end.Sub(r.start), r.err)
		default:
			cut++
			fmt.Printf("connection at %s cut after %v: %v\n", r.start.Format("15:04:05.000"), r.end.Sub(r.start), r.err)
		}
	}
	return ok, refused, cut
}
