package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"

	"github.com/l4lb/l4lb/dataplane/health"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// udpClient is a socket connected to addr, closed with the test. A connected socket only
// accepts replies from the address it sent to: the VIP.
func udpClient(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// askUDP sends msg on c and returns the reply and where it came from.
func askUDP(t *testing.T, c *net.UDPConn, msg string) (string, netip.AddrPort) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), from
}

// freeUDPPort is a port free on ip now (127.0.0.1 when empty); another address of a test's
// own keeps other test binaries' listeners off it.
func freeUDPPort(t *testing.T, ip ...string) netip.AddrPort {
	t.Helper()
	on := net.IPv4(127, 0, 0, 1)
	if len(ip) > 0 {
		on = net.ParseIP(ip[0])
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: on})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// udpListenerModel is a UDP listener on a free port whose round-robin pool holds the echoes
// named by members (their names are the members' names).
func udpListenerModel(t *testing.T, limit int, idle time.Duration, members map[string]netip.AddrPort) model.Listener {
	l := model.Listener{
		Key: "ns/u", Protocol: model.UDP, Address: freeUDPPort(t), ConnectionLimit: limit, TimeoutClientData: idle,
		Pool: &model.Pool{Key: "ns/up", Protocol: model.PoolUDP, Algorithm: model.RoundRobin},
	}
	for name, a := range members {
		l.Pool.Members = append(l.Pool.Members, model.Member{Name: name, Address: a, MonitorAddress: a, Weight: 1, AdminStateUp: true})
	}
	return l
}

func TestUDPSessionsBalanceReplyFromTheVIPAndExpire(t *testing.T) {
	l := udpListenerModel(t, 100, 200*time.Millisecond, map[string]netip.AddrPort{"a": udptest.Echo(t, "a"), "b": udptest.Echo(t, "b")})
	s := serve(t, l)
	ask := func(c *net.UDPConn, msg string) string {
		t.Helper()
		reply, from := askUDP(t, c, msg)
		if from != l.Address {
			t.Fatalf("reply came from %v, not the listener %v", from, l.Address)
		}
		return reply
	}
	seen := map[string]bool{}
	for range 4 {
		c := udpClient(t, l.Address)
		first := ask(c, "x")
		if again := ask(c, "y"); again[:1] != first[:1] {
			t.Fatalf("one client's session moved from %s to %s", first, again)
		}
		seen[first[:1]] = true
		c.Close()
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("sessions did not spread over both members: %v", seen)
	}
	udp := s.udp["ns/u"]
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := udp.sessionCount()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions did not expire", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A burst of datagrams crosses the proxy (in runs sent with UDP segmentation offload, where
// the kernel has it) and arrives as the same datagrams, each whole, both ways.
func TestUDPBurstsKeepDatagramBoundaries(t *testing.T) {
	l := udpListenerModel(t, 100, time.Minute, map[string]netip.AddrPort{"a": udptest.Echo(t, "a")})
	serve(t, l)
	c := udpClient(t, l.Address)
	c.SetReadBuffer(1 << 20)
	want := map[string]bool{}
	var burst []ipv4.Message
	for i := range 40 {
		size := 300
		if i == 19 {
			size = 37 // a shorter one inside a run
		}
		p := bytes.Repeat([]byte{byte('A' + i%26)}, size)
		p[0] = byte(i)
		want["a:"+string(p)] = true
		burst = append(burst, ipv4.Message{Buffers: [][]byte{p}})
	}
	// One system call puts the whole burst in the proxy's queue, so it reads them together.
	if n, err := ipv4.NewPacketConn(c).WriteBatch(burst, 0); err != nil || n != len(burst) {
		t.Fatalf("sent %d of %d: %v", n, len(burst), err)
	}
	buf := make([]byte, 2048)
	for range burst {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%d replies missing: %v", len(want), err)
		}
		if !want[string(buf[:n])] {
			t.Fatalf("a reply of %d bytes that was not sent (or came twice): %q...", n, buf[:min(n, 8)])
		}
		delete(want, string(buf[:n]))
	}
	t.Logf("segmentation offload in use: %v", gso.Load())
}

// A UDP listener has a socket per core: clients spread over them, and connectionLimit still
// counts the sessions of all of them together.
func TestUDPSessionsSpreadOverCoresWithinOneLimit(t *testing.T) {
	l := udpListenerModel(t, 24, time.Minute, map[string]netip.AddrPort{"a": udptest.Echo(t, "a")})
	s := serve(t, l)
	answered := 0
	for range 32 {
		c := udpClient(t, l.Address)
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			answered++
		}
	}
	if answered != l.ConnectionLimit {
		t.Fatalf("%d of 32 clients answered, want the limit of %d", answered, l.ConnectionLimit)
	}
	u := s.udp["ns/u"]
	if len(u.socks) != max(1, runtime.GOMAXPROCS(0)) {
		t.Fatalf("%d sockets for %d cores", len(u.socks), runtime.GOMAXPROCS(0))
	}
	for i, us := range u.socks {
		c := make(chan int, 1)
		us.lp.do(func(*loop) { c <- len(us.sessions) })
		if n := <-c; n == 0 {
			t.Errorf("socket %d holds no session of 24: clients did not spread over the cores", i)
		}
	}
}

// A member whose port is closed answers with ICMP port unreachable: its session ends at
// once, so the client's next datagram opens a session on another member instead of
// vanishing until the idle timeout (a pool without a health monitor has nothing else to
// tell it).
func TestUDPSessionToAClosedPortMovesOn(t *testing.T) {
	closed := freeUDPPort(t)
	l := udpListenerModel(t, 100, time.Minute, map[string]netip.AddrPort{"a": udptest.Echo(t, "a"), "b": closed})
	s := serve(t, l)
	buf := make([]byte, 64)
	for i := range 4 {
		c := udpClient(t, l.Address)
		answered := false
		for range 3 {
			c.Write([]byte("x"))
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if n, err := c.Read(buf); err == nil && string(buf[:n]) == "a:x" {
				answered = true
				break
			}
		}
		if !answered {
			t.Fatalf("client %d: no answer in three tries; its session stays on the closed port", i)
		}
	}
	if e := value(t, s.metrics.memberErrors.WithLabelValues(l.Pool.Key, "b", closed.String())); e == 0 {
		t.Error("the closed member's errors were not counted")
	}
}

// A session whose member fails its health monitor moves to a member that is up with the
// client's next datagram: a datagram flow has no connection on the member to keep.
func TestUDPSessionLeavesAMemberMarkedDown(t *testing.T) {
	onBothPaths(t, udpSessionLeavesAMemberMarkedDown)
}

func udpSessionLeavesAMemberMarkedDown(t *testing.T, p path) {
	members := map[string]netip.AddrPort{"a": udptest.Echo(t, "a"), "b": udptest.Echo(t, "b")}
	l := udpListenerModel(t, 100, time.Minute, members)
	s := p.serve(t, Options{}, l)
	c := udpClient(t, l.Address)
	first, _ := askUDP(t, c, "x")
	first = first[:1] // the member's name
	s.onHealth(health.Event{Pool: l.Pool.Key, Member: first, Address: members[first], Up: false, Reason: "test"})
	if now, _ := askUDP(t, c, "y"); now[:1] == first {
		t.Fatalf("the session stayed on member %s after it was marked down", first)
	}
}

// The same holds after a reconfiguration changed the member (a new weight gives it a new
// runtime), and for a member an operator disables: adminStateUp false means no traffic.
func TestUDPSessionFollowsItsMemberThroughChanges(t *testing.T) {
	sessionFollowsItsMember(t, serve, func(t *testing.T, members map[string]netip.AddrPort) model.Listener {
		return udpListenerModel(t, 100, time.Minute, members)
	})
}

// sessionFollowsItsMember is TestUDPSessionFollowsItsMemberThroughChanges on a server that
// serve makes (the proxy's, or one with the kernel path) for a listener that listener makes.
func sessionFollowsItsMember(t *testing.T, serve func(*testing.T, ...model.Listener) *Server,
	listener func(*testing.T, map[string]netip.AddrPort) model.Listener) {
	members := map[string]netip.AddrPort{"a": udptest.Echo(t, "a"), "b": udptest.Echo(t, "b")}
	l := listener(t, members)
	s := serve(t, l)
	member := func(name string) *model.Member {
		for i := range l.Pool.Members {
			if l.Pool.Members[i].Name == name {
				return &l.Pool.Members[i]
			}
		}
		t.Fatalf("no member %s", name)
		return nil
	}
	apply := func() {
		t.Helper()
		if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
			t.Fatal(failed)
		}
	}

	c := udpClient(t, l.Address)
	first, _ := askUDP(t, c, "x")
	first = first[:1]
	member(first).Weight = 3
	apply()
	if again, _ := askUDP(t, c, "y"); again[:1] != first {
		t.Fatalf("a new weight moved the session from %s to %s", first, again[:1])
	}
	s.onHealth(health.Event{Pool: l.Pool.Key, Member: first, Address: members[first], Up: false, Reason: "test"})
	if now, _ := askUDP(t, c, "z"); now[:1] == first {
		t.Fatalf("the session stayed on member %s, marked down after its weight changed", first)
	}

	d := udpClient(t, l.Address)
	second, _ := askUDP(t, d, "x")
	second = second[:1] // the member that is up
	member(first).AdminStateUp = false
	s.onHealth(health.Event{Pool: l.Pool.Key, Member: first, Address: members[first], Up: true, Reason: "test"})
	apply()
	e := udpClient(t, l.Address)
	if got, _ := askUDP(t, e, "x"); got[:1] != second {
		t.Fatalf("a new client went to %s", got[:1])
	}
	member(second).AdminStateUp = false
	member(first).AdminStateUp = true
	apply()
	if now, _ := askUDP(t, d, "y"); now[:1] == second {
		t.Fatalf("the session stayed on member %s after it was disabled", second)
	}
}

// holdLoops blocks every loop until the returned function is called.
func holdLoops(t *testing.T) (release func()) {
	t.Helper()
	ch := make(chan struct{})
	for i := range runtime.GOMAXPROCS(0) {
		lp, err := loopAt(i)
		if err != nil {
			t.Fatal(err)
		}
		held := make(chan struct{})
		lp.do(func(*loop) { close(held); <-ch })
		<-held
	}
	return sync.OnceFunc(func() { close(ch) })
}

// What the kernel drops on a full listener queue shows in the listener's metrics.
func TestUDPDropsAreCounted(t *testing.T) {
	l := udpListenerModel(t, 100, time.Minute, map[string]netip.AddrPort{"a": udptest.Echo(t, "a")})
	reg := prometheus.NewRegistry()
	s := New(Options{Registerer: reg})
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	t.Cleanup(s.Close)
	client := udpClient(t, l.Address)
	release := holdLoops(t)
	defer release()
	// Far more than the 4 MiB queue holds: 20 000 datagrams of 1400 bytes.
	msg := make([]byte, 1400)
	for range 20000 {
		client.Write(msg)
	}
	release()
	dropped := func() float64 { return value(t, s.metrics.dropped.WithLabelValues(l.Key)) }
	deadline := time.Now().Add(10 * time.Second)
	for dropped() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("20 000 datagrams against a held listener, and no drop counted after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := dropped(); d >= 20000 {
		t.Fatalf("%v of 20 000 datagrams counted as dropped: the queue took none", d)
	}
}

// A burst that arrives while every loop is busy waits in the listener's queue instead of
// being dropped: the kernel's default queue holds about 270 small datagrams.
func TestUDPBurstWaitsForBusyLoops(t *testing.T) {
	if os.Geteuid() != 0 {
		b, _ := os.ReadFile("/proc/sys/net/core/rmem_max")
		if rmemMax, _ := strconv.Atoi(strings.TrimSpace(string(b))); rmemMax < listenerBuffer {
			t.Skip("needs root (to pass net.core.rmem_max) or net.core.rmem_max >= 4 MiB")
		}
	}
	member, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	// The member must not drop the burst either: as large a queue as the listener's.
	raw, err := member.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { queueUp(int(fd)) })
	l := udpListenerModel(t, 100, time.Minute, map[string]netip.AddrPort{"a": member.LocalAddr().(*net.UDPAddr).AddrPort()})
	serve(t, l)
	client := udpClient(t, l.Address)
	// The session opens first, so the burst below only waits for the loops.
	client.Write([]byte("hello"))
	member.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	if _, err := member.Read(buf); err != nil {
		t.Fatal(err)
	}

	const burst = 2000
	release := holdLoops(t)
	defer release()
	msg := make([]byte, 64)
	for range burst {
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	release()
	got := 0
	for got < burst {
		member.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := member.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != burst {
		t.Fatalf("the member got %d of a burst of %d datagrams sent while the loops were busy", got, burst)
	}
}
