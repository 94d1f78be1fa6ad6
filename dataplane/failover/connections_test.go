package failover

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
	"github.com/l4lb/l4lb/test/synflood"
)

// streams keeps connections through the VIP busy: each sends a line and reads it back every
// 100 ms, end to end (client to member and back), until stop.
type streams struct {
	wg     sync.WaitGroup
	quit   chan struct{}
	mu     sync.Mutex
	errs   map[int]error
	after  map[int]int // lines echoed since mark was set
	marked time.Time
}

func (l *lab) stream(n int) *streams {
	s := &streams{quit: make(chan struct{}), errs: map[int]error{}, after: map[int]int{}}
	for i := range n {
		c := l.dialEcho()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.c.Close()
			for seq := 0; ; seq++ {
				select {
				case <-s.quit:
					return
				case <-time.After(100 * time.Millisecond):
				}
				err := c.try(fmt.Sprintf("connection %d line %d", i, seq))
				s.mu.Lock()
				if err != nil {
					s.errs[i] = err
				} else if !s.marked.IsZero() {
					s.after[i]++
				}
				s.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return s
}

// mark starts counting the lines each connection echoes from now.
func (s *streams) mark() {
	s.mu.Lock()
	s.marked = time.Now()
	s.mu.Unlock()
}

// stop ends the streams and says which broke, and which echoed nothing since mark.
func (s *streams) stop(n int) (broken []string, kept int) {
	close(s.quit)
	s.wg.Wait()
	for i := range n {
		switch {
		case s.errs[i] != nil:
			broken = append(broken, fmt.Sprintf("%d: %v", i, s.errs[i]))
		case s.after[i] == 0:
			broken = append(broken, fmt.Sprintf("%d: nothing echoed after the move", i))
		default:
			kept++
		}
	}
	return broken, kept
}

// kernelPath waits until the agents report the listener carried by the kernel.
func (l *lab) kernelPath(name string) {
	l.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		var ls lbv1.Listener
		if err := l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: name}, &ls); err == nil && ls.Status.DataPath == lbv1.DataPathKernel {
			return
		}
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("listener %s is not carried by the kernel", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forwardingLab is a lab of three nodes that forward, as Kubernetes nodes do, their agents
// started with the chart's defaults otherwise.
func forwardingLab(t *testing.T) *lab {
	l := newLab(t, 3)
	for _, node := range []string{"n1", "n2", "n3"} {
		lantest.Sh(t, "ip", "netns", "exec", l.tp.Hosts[node].NS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
		l.start(node)
	}
	return l
}

// Two ways the VIP leaves its holder.
const (
	death   = "the holder's death"
	planned = "a planned move"
)

// moveFrom makes the VIP leave holder: its death (the agent SIGKILLed, its link cut) or a
// planned move (SIGTERM).
func (l *lab) moveFrom(holder, move string) {
	if move == planned {
		l.agents[holder].cmd.Process.Signal(syscall.SIGTERM)
		return
	}
	l.kill(holder)
	lantest.Sh(l.t, "ip", "-n", l.tp.Hosts[holder].NS, "link", "set", "eth0", "down")
}

// rejoin brings holder back after moveFrom, and lets it settle.
func (l *lab) rejoin(holder, move string) {
	if move == death {
		lantest.Sh(l.t, "ip", "-n", l.tp.Hosts[holder].NS, "link", "set", "eth0", "up")
	} else {
		l.agents[holder].cmd.Wait()
	}
	l.start(holder)
	time.Sleep(3 * time.Second)
}

// TestKernelConnectionsSurviveAMove: 20 connections stream through a kernel-path listener
// while a client opens a new connection every 20 ms; the holder of the VIP dies (its agent
// SIGKILLed, its link cut), then the new holder is stopped with SIGTERM (a planned move). Every
// connection goes on through both moves, with no reset: the holder told its successor of
// each, and the successor wrote them into its conntrack before it answered for the VIP.
// Three nodes that forward, as Kubernetes nodes do, with the chart's defaults otherwise.
func TestKernelConnectionsSurviveAMove(t *testing.T) { connectionsSurviveAMove(t, false) }

// TestConnectionsOpenedInASynFloodSurviveAMove: the same while a SYN flood from spoofed
// sources goes on at the listener, so its holder answers its SYNs with SYN cookies (the
// agents' defaults) and every connection is set up by the SYN proxy: each connection's
// sequence shift goes to the successor with it.
func TestConnectionsOpenedInASynFloodSurviveAMove(t *testing.T) { connectionsSurviveAMove(t, true) }

func connectionsSurviveAMove(t *testing.T, flood bool) {
	const n = 20
	l := forwardingLab(t)
	l.createLB()
	l.createEcho()
	l.waitServed("start")
	l.kernelPath("echo")
	l.kernelPath("l")
	if flood {
		// 500 SYNs a second, each left half-open for timeoutMemberConnect (5 s): past the
		// agents' 1,000 within 3 s.
		ctx, stop := context.WithCancel(l.ctx)
		done := make(chan error, 1)
		go func() {
			done <- l.cl.In(func() error {
				_, err := synflood.Send(ctx, netip.MustParseAddrPort(vipAddr+":9000"), netip.MustParsePrefix("10.99.128.0/17"), 500)
				return err
			})
		}()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("the SYN flood: %v", err)
			}
		})
	}

	for _, move := range []string{death, planned} {
		holder := l.waitSoleAnswer("")
		if flood {
			l.waitSynCookies(holder)
		}
		cookies := l.synproxy(holder)["cookie_valid"]
		s := l.stream(n)
		traffic := newClientLoop(l.cl, l.target)
		time.Sleep(time.Second) // the connections' flows reach the successor
		if proxied := l.synproxy(holder)["cookie_valid"] - cookies; flood != (proxied >= n) {
			t.Fatalf("%s set up %d connections with SYN cookies; want all %d of them in a flood=%v", holder, proxied, n, flood)
		}
		s.mark()
		movedAt := time.Now()
		l.moveFrom(holder, move)
		next := l.waitSoleAnswer(holder)
		traffic.firstSuccessAfter(t, movedAt, 20*time.Second)
		time.Sleep(3 * time.Second)
		ok, refused, cut := traffic.stop()
		gap := traffic.longestGap()
		broken, kept := s.stop(n)
		path := "kernel path"
		if flood {
			path += ", connections opened in a SYN flood"
		}
		fmt.Printf("%s, %s: %d of %d open connections kept; longest gap between answered new connections %v (%d answered, %d refused, %d cut)\n",
			path, move, kept, n, gap.Round(time.Millisecond), ok, refused, cut)
		if len(broken) > 0 {
			l.dumpLogs()
			t.Fatalf("%s (%s -> %s): %d of %d connections broke:\n%s", move, holder, next, len(broken), n, strings.Join(broken, "\n"))
		}
		l.rejoin(holder, move)
	}
}

// synproxy is node's SYN proxy's statistics (/proc/net/stat/synproxy: a header, then a line
// of hexadecimal counts per CPU), summed: cookie_valid, the connections it set up, say.
func (l *lab) synproxy(node string) map[string]int {
	l.t.Helper()
	sums := map[string]int{}
	out, err := exec.Command("ip", "netns", "exec", l.tp.Hosts[node].NS, "cat", "/proc/net/stat/synproxy").Output()
	if err != nil {
		return sums // no synproxy in this namespace yet
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	names := strings.Fields(lines[0])
	for _, line := range lines[1:] {
		for i, f := range strings.Fields(line) {
			if i < len(names) {
				v, _ := strconv.ParseUint(f, 16, 64)
				sums[names[i]] += int(v)
			}
		}
	}
	return sums
}

// waitSynCookies waits until node answers SYNs with SYN cookies (its agent found a listener
// flooded).
func (l *lab) waitSynCookies(node string) {
	l.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for l.synproxy(node)["syn_received"] == 0 {
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("%s does not answer the flood's SYNs with SYN cookies", node)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sessions are UDP clients of the VIP, each on a socket of its own, sending a datagram every
// 100 ms and reading the answer, which names the member that answered.
type sessions struct {
	wg     sync.WaitGroup
	quit   chan struct{}
	mu     sync.Mutex
	first  map[int]string // the member that answered first
	others map[int]string // another member that answered after mark
	after  map[int]int    // answers since mark
	marked bool
}

func (l *lab) udpSessions(n int, port int) *sessions {
	s := &sessions{quit: make(chan struct{}), first: map[int]string{}, others: map[int]string{}, after: map[int]int{}}
	for i := range n {
		var c *net.UDPConn
		if err := l.cl.In(func() (err error) {
			c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(vipAddr), uint16(port))))
			return err
		}); err != nil {
			l.t.Fatal(err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			buf := make([]byte, 256)
			for seq := 0; ; seq++ {
				select {
				case <-s.quit:
					return
				case <-time.After(100 * time.Millisecond):
				}
				msg := fmt.Sprintf("session %d datagram %d", i, seq)
				c.Write([]byte(msg))
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := c.Read(buf)
				member, got, _ := strings.Cut(string(buf[:max(n, 0)]), " ")
				if err != nil || got != msg {
					continue // lost while nobody answers for the VIP, or a late answer
				}
				s.mu.Lock()
				switch {
				case s.first[i] == "":
					s.first[i] = member
				case !s.marked:
				case member != s.first[i]:
					s.others[i] = member
				default:
					s.after[i]++
				}
				s.mu.Unlock()
			}
		}()
	}
	return s
}

func (s *sessions) mark() {
	s.mu.Lock()
	s.marked = true
	s.mu.Unlock()
}

// stop ends the sessions and says which moved to another member or got no answer since mark.
func (s *sessions) stop(n int) (broken []string, kept int) {
	close(s.quit)
	s.wg.Wait()
	for i := range n {
		switch {
		case s.others[i] != "":
			broken = append(broken, fmt.Sprintf("%d: answered by %s, then by %s", i, s.first[i], s.others[i]))
		case s.after[i] == 0:
			broken = append(broken, fmt.Sprintf("%d: no answer after the move (first from %q)", i, s.first[i]))
		default:
			kept++
		}
	}
	return broken, kept
}

// TestKernelUDPSessionsKeepTheirMember: 20 clients, each on its own socket, send a datagram
// every 100 ms through a kernel-path UDP listener (round robin over two members) and read the
// answer, which names its member; the holder of the VIP dies (SIGKILL, link cut), then the new
// holder is stopped with SIGTERM. Every client keeps its member through both moves: its flow,
// told to the successor, is in the new holder's conntrack before that node answers for the
// VIP, so the next datagram is not a new flow that round robin could send elsewhere (a
// stateful protocol over UDP, QUIC or WireGuard, would lose its session).
func TestKernelUDPSessionsKeepTheirMember(t *testing.T) {
	const n = 20
	l := forwardingLab(t)
	l.createLB()
	for _, o := range []client.Object{
		&lbv1.Listener{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "dns"},
			Spec: lbv1.ListenerSpec{LoadBalancerRef: lbv1.ObjectReference{Name: "lb"}, Protocol: lbv1.ListenerUDP, ProtocolPort: 53}},
		&lbv1.Pool{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "dns"},
			Spec: lbv1.PoolSpec{ListenerRef: &lbv1.ObjectReference{Name: "dns"}, Protocol: lbv1.PoolUDP, LBAlgorithm: lbv1.RoundRobin,
				Members: []lbv1.Member{{Name: "m1", Address: "192.0.2.11", ProtocolPort: 9053}, {Name: "m2", Address: "192.0.2.12", ProtocolPort: 9053}}}},
	} {
		if err := l.k8s.Create(l.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	l.waitServed("start")
	l.kernelPath("dns")

	for _, move := range []string{death, planned} {
		holder := l.waitSoleAnswer("")
		s := l.udpSessions(n, 53)
		time.Sleep(time.Second) // the flows reach the successor
		s.mark()
		l.moveFrom(holder, move)
		next := l.waitSoleAnswer(holder)
		time.Sleep(3 * time.Second)
		broken, kept := s.stop(n)
		members := map[string]int{}
		for _, m := range s.first {
			members[m]++
		}
		fmt.Printf("kernel path, UDP, %s: %d of %d sessions kept their member (first answers by member: %v)\n", move, kept, n, members)
		if len(members) < 2 {
			t.Fatalf("%s: every session went to one member (%v): round robin did not spread them, so keeping them proves nothing", move, members)
		}
		if len(broken) > 0 {
			l.dumpLogs()
			t.Fatalf("%s (%s -> %s): %d of %d sessions broke:\n%s", move, holder, next, len(broken), n, strings.Join(broken, "\n"))
		}
		l.rejoin(holder, move)
	}
}
