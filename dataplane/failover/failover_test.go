package failover

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const backendEnv = "L4LB_FAILOVER_BACKEND"

// TestMain doubles as a back-end: re-executed inside a namespace with
// L4LB_FAILOVER_BACKEND=name[:port], it answers every connection on the port (8080 by
// default) with its name, and echoes on port 9000.
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
		// Port+1 answers how many connections the back-end accepted (health probes count).
		var accepted atomic.Int64
		if p, err := strconv.Atoi(port); err == nil {
			if cl, err := net.Listen("tcp", ":"+strconv.Itoa(p+1)); err == nil {
				go func() {
					for {
						c, err := cl.Accept()
						if err != nil {
							return
						}
						fmt.Fprint(c, accepted.Load())
						c.Close()
					}
				}()
			}
		}
		// Port 9000 echoes lines back, for connections that stay open.
		if el, err := net.Listen("tcp", ":9000"); err == nil {
			go func() {
				for {
					c, err := el.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(c, c); c.Close() }()
				}
			}()
		}
		// UDP port 9053 answers each datagram with the back-end's name and the datagram.
		if uc, err := net.ListenPacket("udp", ":9053"); err == nil {
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := uc.ReadFrom(buf)
					if err != nil {
						return
					}
					uc.WriteTo(append([]byte(name+" "), buf[:n]...), from)
				}
			}()
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			accepted.Add(1)
			c.Write([]byte(name))
			c.Close()
		}
	}
	os.Exit(m.Run())
}

const vipAddr = "192.0.2.100"

// TestVIPFailover runs two dataplane agents, with the chart's defaults, on two hosts (network
// namespaces on one LAN, whose gateway is the client host) with a client and two members,
// against a real API server and the controller, and proves: one node answers ARP for the VIP;
// the API server paused for 5 s moves nothing and fails no connection; a holder's agent
// SIGKILLed leaves exactly one node answering, before and after it is restarted; a node death
// (agent killed, link cut) hands the VIP over, and the survivor keeps it while the API server
// is paused; a planned move refuses no connection; the API server paused for 60 s moves nothing,
// and the holder refreshes its announcement meanwhile.
func TestVIPFailover(t *testing.T) {
	l := newLab(t, 2)
	l.start("n1")
	l.start("n2")
	l.createLB()
	l.waitServed("start")
	first := l.waitClientPointsAtHolder()

	// 1. The API server paused for 5 s: nothing moves, no connection fails.
	l.pauseAPI("5 s", 5*time.Second, first)

	// 2. The holder's agent SIGKILLed, restarted 3 s later: at no moment do two MACs answer.
	arp := l.sampleARP()
	traffic := newClientLoop(l.cl, l.target)
	time.Sleep(300 * time.Millisecond)
	l.kill(first)
	second := l.waitSoleAnswer(first)
	time.Sleep(3 * time.Second)
	l.start(first) // it finds the VIP it had on l4lb0, and the kernel still silent for it
	time.Sleep(5 * time.Second)
	cur := l.waitSoleAnswer("")
	_, _, _ = second, cur, first
	ok, refused, cut := traffic.stop()
	maxMACs, moves := arp.stop()
	gap := traffic.longestGap()
	t.Logf("holder %s SIGKILLed and restarted: %d answered, %d refused, %d cut; longest gap %v; at most %d MACs answered at once",
		first, ok, refused, cut, gap.Round(time.Millisecond), maxMACs)
	fmt.Printf("agent SIGKILLed and restarted: longest gap between answered connections %v, %d refused, most MACs answering one ARP request %d, holder changes %d\n",
		gap.Round(time.Millisecond), refused, maxMACs, moves)
	if maxMACs > 1 {
		l.dumpLogs()
		t.Fatalf("%d MACs answered one ARP request for the VIP", maxMACs)
	}

	// 3. Node death after that restart: agent killed and link cut. The survivor takes over,
	// and keeps serving while the API server is paused.
	cur = l.waitSoleAnswer("")
	traffic = newClientLoop(l.cl, l.target)
	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	l.kill(cur)
	lantest.Sh(t, "ip", "-n", l.tp.Hosts[cur].NS, "link", "set", "eth0", "down")
	survivor := l.waitSoleAnswer(cur)
	gap = traffic.firstSuccessAfter(t, killedAt, 20*time.Second)
	traffic.stop()
	t.Logf("failover: holder %s died, %s took over; new connections answered again after %v", cur, survivor, gap.Round(time.Millisecond))
	fmt.Printf("failover gap (l4lb, node death, default flags): %v\n", gap.Round(time.Millisecond))
	l.pauseAPI("5 s, one node dead", 5*time.Second, survivor)
	lantest.Sh(t, "ip", "-n", l.tp.Hosts[cur].NS, "link", "set", "eth0", "up")
	l.start(cur)
	time.Sleep(3 * time.Second)

	// 4. A planned move: the holder is stopped with SIGTERM; no new connection is refused.
	cur = l.waitSoleAnswer("")
	traffic = newClientLoop(l.cl, l.target)
	time.Sleep(300 * time.Millisecond)
	l.agents[cur].cmd.Process.Signal(syscall.SIGTERM)
	next := l.waitSoleAnswer(cur)
	time.Sleep(time.Second)
	ok, refused, cut = traffic.stop()
	t.Logf("planned move %s -> %s: %d connections answered, %d refused, %d cut once established", cur, next, ok, refused, cut)
	fmt.Printf("planned move: %d connections answered, %d refused, %d established ones cut\n", ok, refused, cut)
	if refused != 0 || ok == 0 {
		t.Fatalf("planned move: %d of %d new connections refused", refused, ok+refused+cut)
	}
	l.agents[cur].cmd.Wait()
	l.start(cur)
	time.Sleep(3 * time.Second)

	// 5. The API server paused for 60 s: nothing moves, and the holder's periodic gratuitous
	// ARP (every 30 s by default) reaches the LAN meanwhile.
	cur = l.waitSoleAnswer("")
	garps := l.captureGARP()
	l.pauseAPI("60 s", 60*time.Second, cur)
	if n := garps(); n == 0 {
		t.Fatal("no gratuitous ARP for the VIP in 65 s after takeover: the periodic refresh is missing")
	} else {
		fmt.Printf("periodic gratuitous ARPs seen in 65 s of steady state: %d\n", n)
	}
}

// TestPartitionedHolder runs three dataplane nodes and cuts the holder off from the other two,
// not from the client: it lets the VIP go (it is the minority), another node takes it, and the
// time both answered is printed; when the cut heals, one node answers again.
func TestPartitionedHolder(t *testing.T) {
	l := newLab(t, 3)
	for _, n := range []string{"n1", "n2", "n3"} {
		l.start(n)
	}
	l.createLB()
	l.waitServed("start")
	first := l.waitSoleAnswer("")

	// The API server's write load in steady state: what the agents write in 20 s.
	writes := l.countWrites(20 * time.Second)
	perNode := float64(writes) / 3 / 20
	fmt.Printf("API server writes per dataplane node per second, steady state: %.2f\n", perNode)
	if perNode > 0.2 {
		t.Fatalf("%.2f API server writes per node per second in steady state; the target is 0.2", perNode)
	}

	// Health probes do not multiply with the nodes: only the holder and the next node in
	// the VIP's order probe the members.
	if err := l.k8s.Create(l.ctx, &lbv1.HealthMonitor{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "hm"},
		Spec: lbv1.HealthMonitorSpec{PoolRef: lbv1.ObjectReference{Name: "p"}, Type: lbv1.MonitorTCP,
			Delay: metav1.Duration{Duration: time.Second}, Timeout: metav1.Duration{Duration: 500 * time.Millisecond}, MaxRetries: 1}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	c0 := l.accepted("m1")
	time.Sleep(10 * time.Second)
	perDelay := float64(l.accepted("m1")-c0) / 10
	fmt.Printf("health probes per member per delay, 3 dataplane nodes: %.1f\n", perDelay)
	if perDelay > 2.5 || perDelay < 1.5 {
		t.Fatalf("%.1f health probes per member per delay with 3 nodes; want 2 (the holder and its standby)", perDelay)
	}

	arp := l.sampleARP()
	cutAt := time.Now()
	var others []string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != first {
			others = append(others, n)
			l.blackhole(first, n)
			l.blackhole(n, first)
		}
	}
	next := l.waitSoleAnswer(first)
	took := time.Since(cutAt)
	time.Sleep(2 * time.Second)
	maxMACs, _ := arp.stop()
	both := arp.overlap()
	t.Logf("partition: %s cut from %v; %s answers alone after %v; two answered for %v", first, others, next, took.Round(time.Millisecond), both.Round(time.Millisecond))
	fmt.Printf("partitioned holder (3 nodes): another answers alone after %v, both answered for %v (most at once: %d)\n",
		took.Round(time.Millisecond), both.Round(time.Millisecond), maxMACs)
	if got := l.answering(); len(got) != 1 || got[0] == l.mac(first) {
		t.Fatalf("after the partition, the MACs answering for the VIP are %v; %s (%s) is cut off", got, first, l.mac(first))
	}
	for _, n := range others {
		l.heal(first, n)
		l.heal(n, first)
	}
	time.Sleep(5 * time.Second)
	if got := l.answering(); len(got) != 1 {
		l.dumpLogs()
		t.Fatalf("after the partition healed, %d MACs answer for the VIP", len(got))
	}
	l.waitServed("after the partition healed")
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

func newClientLoop(h *lantest.Host, target string) *clientLoop {
	l := &clientLoop{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(l.finished)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			// A new connection every 20 ms whatever became of the previous ones: one whose
			// SYN was lost waits for its retransmission, the next ones need not.
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				s, err := h.Fetch(target, 5*time.Second)
				l.mu.Lock()
				l.results = append(l.results, result{start, time.Now(), err == nil && s != "", err})
				l.mu.Unlock()
			}()
			select {
			case <-l.done:
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

// longestGap is the longest time between two answered connections.
func (l *clientLoop) longestGap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	var gap time.Duration
	rs := slices.Clone(l.results)
	slices.SortFunc(rs, func(a, b result) int { return a.end.Compare(b.end) })
	for _, r := range rs {
		if !r.ok {
			continue
		}
		if !last.IsZero() && r.end.Sub(last) > gap {
			gap = r.end.Sub(last)
		}
		last = r.end
	}
	return gap
}

// firstSuccessAfter waits for a connection started after t0 to succeed and returns how long
// after t0 it was answered.
func (l *clientLoop) firstSuccessAfter(t *testing.T, t0 time.Time, limit time.Duration) time.Duration {
	t.Helper()
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		l.mu.Lock()
		first := time.Time{}
		for _, r := range l.results {
			if r.ok && r.start.After(t0) && (first.IsZero() || r.end.Before(first)) {
				first = r.end
			}
		}
		if !first.IsZero() {
			l.mu.Unlock()
			return first.Sub(t0)
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no connection succeeded within %v of the failure", limit)
	return 0
}

// retransmitted counts the answered connections that took a second or more: their SYN (or
// its answer) was lost and sent again, which the client would have felt.
func (l *clientLoop) retransmitted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if r.ok && r.end.Sub(r.start) >= time.Second {
			n++
		}
	}
	return n
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
			if refused > 3 {
				continue
			}
			fmt.Printf("connection at %s refused after %v: %v\n", r.start.Format("15:04:05.000"), r.end.Sub(r.start), r.err)
		default:
			cut++
			if cut > 3 {
				continue
			}
			fmt.Printf("connection at %s cut after %v: %v\n", r.start.Format("15:04:05.000"), r.end.Sub(r.start), r.err)
		}
	}
	return ok, refused, cut
}

// TestLocalTrafficPolicy: a load balancer with trafficPolicy Local (a Service's
// externalTrafficPolicy Local) is held by a node running one of its members, and that node
// sends only to its own: three agents as processes, the members labelled with their nodes.
func TestLocalTrafficPolicy(t *testing.T) {
	l := newLab(t, 3)
	for _, n := range []string{"n1", "n2", "n3"} {
		l.start(n)
	}
	l.createLB()
	// Read and written again on a conflict: the controller and the agents write the same
	// objects' statuses meanwhile, each a new version.
	setNodes := func(m1, m2 string) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var lb lbv1.LoadBalancer
			if err := l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: "lb"}, &lb); err != nil || lb.Spec.TrafficPolicy == lbv1.TrafficLocal {
				return err
			}
			lb.Spec.TrafficPolicy = lbv1.TrafficLocal
			return l.k8s.Update(l.ctx, &lb)
		}); err != nil {
			t.Fatal(err)
		}
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var p lbv1.Pool
			if err := l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: "p"}, &p); err != nil {
				return err
			}
			p.Spec.Members[0].NodeName, p.Spec.Members[1].NodeName = m1, m2
			return l.k8s.Update(l.ctx, &p)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// answers waits until exactly holder answers ARP and the client gets only want.
	answers := func(what, holder string, want ...string) {
		t.Helper()
		end := time.Now().Add(30 * time.Second)
		for {
			seen := map[string]int{}
			for range 8 {
				if s, err := l.cl.Fetch(l.target, time.Second); err == nil {
					seen[s]++
				}
			}
			macs := l.answering()
			ok := len(macs) == 1 && l.nodeOf(macs[0]) == holder && len(seen) == len(want)
			for _, w := range want {
				ok = ok && seen[w] > 0
			}
			if ok {
				t.Logf("%s: %s holds, answers %v", what, holder, seen)
				return
			}
			if time.Now().After(end) {
				l.dumpLogs()
				var nodes []string
				for _, m := range macs {
					nodes = append(nodes, l.nodeOf(m))
				}
				t.Fatalf("%s: ARP answered by %v, connections answered by %v; want %s alone, answered by %v", what, nodes, seen, holder, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	setNodes("n3", "n3")
	answers("both members on n3", "n3", "m1", "m2")
	setNodes("n2", "n2")
	answers("both members moved to n2", "n2", "m1", "m2")
	// One member on each of n1 and n3: whichever holds sends to its own member only.
	setNodes("n1", "n3")
	macs := l.answering()
	for end := time.Now().Add(30 * time.Second); len(macs) != 1 || l.nodeOf(macs[0]) == "n2"; macs = l.answering() {
		if time.Now().After(end) {
			t.Fatalf("the VIP is not held by n1 or n3: %v", macs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	holder := l.nodeOf(macs[0])
	mine := map[string]string{"n1": "m1", "n3": "m2"}[holder]
	answers("one member on n1, one on n3", holder, mine)
}
