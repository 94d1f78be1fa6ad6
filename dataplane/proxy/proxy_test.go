package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/health"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func listenerModel(t *testing.T, alg model.Algorithm, members ...model.Member) model.Listener {
	return model.Listener{
		Key: "ns/l", LoadBalancer: "ns/lb", Protocol: model.TCP, Address: freePort(t),
		ConnectionLimit: model.DefaultConnectionLimit, TimeoutClientData: 50 * time.Second,
		TimeoutMemberConnect: 2 * time.Second, TimeoutMemberData: 50 * time.Second,
		Pool: &model.Pool{Key: "ns/p", Protocol: model.PoolTCP, Algorithm: alg, Members: members},
	}
}

func mem(name string, b *tcptest.Backend, weight int) model.Member {
	return model.Member{Name: name, Address: b.Addr, MonitorAddress: b.Addr, Weight: weight, AdminStateUp: true}
}

// path is what carries a test's TCP listeners: the proxy, or the kernel (package nat).
type path struct {
	name   string
	kernel bool
}

// onBothPaths runs test on the proxy and on the kernel path: a listener whose settings the
// kernel honours must behave the same on both.
func onBothPaths(t *testing.T, test func(t *testing.T, p path)) {
	for _, p := range []path{{"proxy", false}, {"kernel", true}} {
		t.Run(p.name, func(t *testing.T) { test(t, p) })
	}
}

// serve serves ls with o on the path, and fails unless the path carries them.
func (p path) serve(t *testing.T, o Options, ls ...model.Listener) *Server {
	t.Helper()
	if p.kernel {
		o.NAT, o.KernelTCP, o.KernelUDP = udptest.KernelTable(t, 0x4f), true, true
	}
	s := New(o)
	t.Cleanup(s.Close)
	if failed := s.Apply(model.Model{Listeners: ls}); len(failed) > 0 {
		t.Fatal(failed)
	}
	for _, l := range ls {
		if s.InKernel(l.Key) != p.kernel {
			t.Fatalf("%s: carried by the kernel: %v, want %v", l.Key, !p.kernel, p.kernel)
		}
	}
	return s
}

func serve(t *testing.T, ls ...model.Listener) *Server {
	t.Helper()
	s := New(Options{})
	if failed := s.Apply(model.Model{Listeners: ls}); len(failed) > 0 {
		t.Fatal(failed)
	}
	t.Cleanup(s.Close)
	return s
}

// get connects through the proxy and returns what the member answered ("" when refused).
func get(t *testing.T, addr netip.AddrPort) (string, error) {
	t.Helper()
	return getFrom(t, "", addr)
}

// getFrom is get from the source address src (another loopback address, say).
func getFrom(t *testing.T, src string, addr netip.AddrPort) (string, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func answers(t *testing.T, addr netip.AddrPort, n int) []string {
	t.Helper()
	var out []string
	for range n {
		s, err := get(t, addr)
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		out = append(out, s)
	}
	return out
}

func TestRoundRobinAlternates(t *testing.T) {
	onBothPaths(t, func(t *testing.T, p path) {
		a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
		l := listenerModel(t, model.RoundRobin, mem("a", a, 1), mem("b", b, 1))
		p.serve(t, Options{}, l)
		got := answers(t, l.Address, 6)
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				t.Fatalf("answers do not alternate: %v", got)
			}
		}
	})
}

func TestWeightsAndDrain(t *testing.T) {
	onBothPaths(t, func(t *testing.T, p path) {
		a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
		l := listenerModel(t, model.RoundRobin, mem("a", a, 3), mem("b", b, 1))
		s := p.serve(t, Options{}, l)
		count := map[string]int{}
		for _, g := range answers(t, l.Address, 40) {
			count[g]++
		}
		if count["a"] != 30 || count["b"] != 10 {
			t.Fatalf("weights 3:1 gave %v", count)
		}
		// weight 0 drains: no new connections.
		l.Pool.Members[0].Weight = 0
		s.Apply(model.Model{Listeners: []model.Listener{l}})
		for _, g := range answers(t, l.Address, 5) {
			if g != "b" {
				t.Fatalf("drained member got a new connection")
			}
		}
	})
}

// SOURCE_IP persistence keeps a client on its member, where round robin would alternate: a
// client of the same network (persistenceGranularity) too, and after a reconfiguration that
// keeps the pool (a member added).
func TestSessionPersistenceKeepsAClientOnItsMember(t *testing.T) {
	a, b, c := tcptest.Named(t, "a"), tcptest.Named(t, "b"), tcptest.Named(t, "c")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1), mem("b", b, 1))
	l.Pool.Persistence = &model.Persistence{Timeout: time.Minute, Bits: 24}
	s := serve(t, l)
	first := answers(t, l.Address, 1)[0]
	stays := func(when, src string) {
		t.Helper()
		for range 4 {
			got, err := getFrom(t, src, l.Address)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if got != first {
				t.Fatalf("%s: client %s went to %q, its member is %q", when, src, got, first)
			}
		}
	}
	stays("at first", "127.0.0.1")
	stays("from the same /24", "127.0.0.2")
	l.Pool.Members = append(l.Pool.Members, mem("c", c, 1))
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	// A client of another network comes first, so a forgotten table would show: round robin
	// would give 127.0.0.1 the next member.
	if _, err := getFrom(t, "127.0.1.1", l.Address); err != nil {
		t.Fatal(err)
	}
	stays("after a member was added", "127.0.0.1")
	// A member whose weight changes gets a new runtime; its clients stay with it.
	for i := range l.Pool.Members {
		if l.Pool.Members[i].Name == first {
			l.Pool.Members[i].Weight = 2
		}
	}
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	for _, other := range []string{"127.0.2.1", "127.0.3.1"} {
		if _, err := getFrom(t, other, l.Address); err != nil {
			t.Fatal(err)
		}
	}
	stays("after its weight changed", "127.0.0.1")
}

func TestBackupTakesOverAndReturns(t *testing.T) {
	onBothPaths(t, func(t *testing.T, p path) { backupTakesOverAndReturns(t, p) })
}

func backupTakesOverAndReturns(t *testing.T, p path) {
	a, b := tcptest.Named(t, "primary"), tcptest.Named(t, "backup")
	bm := mem("b", b, 1)
	bm.Backup = true
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1), bm)
	s := p.serve(t, Options{}, l)
	for _, g := range answers(t, l.Address, 4) {
		if g != "primary" {
			t.Fatalf("backup served while the primary is up: %v", g)
		}
	}
	l.Pool.Members[0].AdminStateUp = false
	s.Apply(model.Model{Listeners: []model.Listener{l}})
	for _, g := range answers(t, l.Address, 4) {
		if g != "backup" {
			t.Fatalf("primary down, got %v", g)
		}
	}
	l.Pool.Members[0].AdminStateUp = true
	s.Apply(model.Model{Listeners: []model.Listener{l}})
	if g := answers(t, l.Address, 1)[0]; g != "primary" {
		t.Fatalf("primary back, got %v", g)
	}
}

func TestHealthMonitorRoutesAroundAStoppedMember(t *testing.T) {
	onBothPaths(t, healthMonitorRoutesAroundAStoppedMember)
}

func healthMonitorRoutesAroundAStoppedMember(t *testing.T, p path) {
	a, b := tcptest.Named(t, "a"), tcptest.Named(t, "b")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1), mem("b", b, 1))
	l.Pool.Monitor = &model.Monitor{Type: model.MonitorTCP, Delay: 30 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2}
	events := make(chan bool, 10)
	s := p.serve(t, Options{OnHealth: func(e health.Event) { events <- e.Up }}, l)

	a.Stop()
	if up := waitEvent(t, events); up {
		t.Fatal("expected a down transition")
	}
	for _, g := range answers(t, l.Address, 6) {
		if g != "b" {
			t.Fatalf("a stopped member got traffic: %v", g)
		}
	}
	if s.MemberUp("ns/p", "a", a.Addr) {
		t.Fatal("MemberUp still says up")
	}
	// Every member down: refused at once.
	b.Stop()
	waitEvent(t, events)
	if g, err := get(t, l.Address); err == nil && g != "" {
		t.Fatalf("all members down but got %q", g)
	}
	a.Restart(t)
	if up := waitEvent(t, events); !up {
		t.Fatal("expected an up transition")
	}
	if g := answers(t, l.Address, 1)[0]; g != "a" {
		t.Fatalf("restored member not served: %v", g)
	}
}

func waitEvent(t *testing.T, events chan bool) bool {
	t.Helper()
	select {
	case up := <-events:
		return up
	case <-time.After(10 * time.Second):
		t.Fatal("no health transition")
	}
	return false
}

func TestConnectFailureRetriesAnotherMember(t *testing.T) {
	a := tcptest.Named(t, "a")
	dead := model.Member{Name: "dead", Address: freePort(t), Weight: 100, AdminStateUp: true}
	l := listenerModel(t, model.RoundRobin, dead, mem("a", a, 1))
	serve(t, l)
	for _, g := range answers(t, l.Address, 5) {
		if g != "a" {
			t.Fatalf("got %q", g)
		}
	}
}

// holder is a backend that keeps connections open until told.
func holder(t *testing.T) (*tcptest.Backend, chan struct{}) {
	release := make(chan struct{})
	b := tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) { <-release; c.Write([]byte("done")) })
	b.Name = "hold"
	return b, release
}

func TestConnectionLimitRefusesAtOnce(t *testing.T) {
	onBothPaths(t, connectionLimitRefusesAtOnce)
}

func connectionLimitRefusesAtOnce(t *testing.T, p path) {
	h, release := holder(t)
	defer close(release)
	l := listenerModel(t, model.RoundRobin, mem("h", h, 1))
	l.ConnectionLimit = 2
	p.serve(t, Options{}, l)
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", l.Address.String())
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		c.Write([]byte("x")) // makes sure the proxy has taken it
	}
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the proxy count both before the third arrives
	g, err := get(t, l.Address)
	if err == nil || g != "" {
		if !isReset(err) {
			t.Fatalf("third connection over a limit of 2: %q, %v", g, err)
		}
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || errors.Is(err, io.EOF))
}

func TestAllowedCIDRsRefuseOtherSources(t *testing.T) {
	onBothPaths(t, allowedCIDRsRefuseOtherSources)
}

func allowedCIDRsRefuseOtherSources(t *testing.T, p path) {
	a := tcptest.Named(t, "a")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1))
	l.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	p.serve(t, Options{}, l)
	if g := answers(t, l.Address, 1)[0]; g != "a" {
		t.Fatalf("allowed source got %q", g)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	if c, err := d.Dial("tcp", l.Address.String()); err == nil { // or reset before the dial returned
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("a disallowed source got %q", b)
		}
	}
	if a.Hits.Load() != 1 {
		t.Fatalf("the member saw %d connections, want 1", a.Hits.Load())
	}
}

// Each idle timeout closes a connection quiet both ways on its own: the client's (member's
// set to an hour), the member's (client's set to an hour), and both.
func TestIdleTimeoutsClose(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, member time.Duration
	}{
		{"timeoutClientData", 200 * time.Millisecond, time.Hour},
		{"timeoutMemberData", time.Hour, 200 * time.Millisecond},
		{"both", 200 * time.Millisecond, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, release := holder(t)
			defer close(release)
			l := listenerModel(t, model.RoundRobin, mem("h", h, 1))
			l.TimeoutClientData, l.TimeoutMemberData = tc.client, tc.member
			serve(t, l)
			c, err := net.Dial("tcp", l.Address.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !waitClosed(t, c, 10*time.Second) {
				t.Fatal("an idle connection was not closed by the proxy")
			}
		})
	}
}

// silent is a member that never completes a connect: a listening socket with a backlog of
// 0 whose queue is already full, so the kernel drops further SYNs.
func silent(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

func TestMemberConnectTimeout(t *testing.T) {
	quiet := model.Member{Name: "q", Address: silent(t), Weight: 1, AdminStateUp: true}
	l := listenerModel(t, model.RoundRobin, quiet)
	l.TimeoutMemberConnect = time.Second
	serve(t, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("the client was answered (%v) while the member's connect was still pending", err)
	}
	if !waitClosed(t, c, 10*time.Second) {
		t.Fatal("the client was not refused after timeoutMemberConnect")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyProtocolHeaders(t *testing.T) {
	src := netip.MustParseAddrPort("192.0.2.10:51000")
	dst := netip.MustParseAddrPort("198.51.100.1:80")
	if got := string(proxyHeader(model.PoolPROXY, src, dst)); got != "PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\r\n" {
		t.Fatalf("v1 header %q", got)
	}
	v2 := proxyHeader(model.PoolPROXYV2, src, dst)
	want := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0x00, 12,
		192, 0, 2, 10, 198, 51, 100, 1, 0xc7, 0x38, 0x00, 80)
	if !bytes.Equal(v2, want) {
		t.Fatalf("v2 header\n got %x\nwant %x", v2, want)
	}
	v6 := string(proxyHeader(model.PoolPROXY, netip.MustParseAddrPort("[2001:db8::1]:1000"), netip.MustParseAddrPort("[2001:db8::2]:443")))
	if v6 != "PROXY TCP6 2001:db8::1 2001:db8::2 1000 443\r\n" {
		t.Fatalf("v6 header %q", v6)
	}
	if proxyHeader(model.PoolTCP, src, dst) != nil {
		t.Fatal("a TCP pool must send no header")
	}
}

// echo is a backend that copies back what it reads, then half-closes. With a prefix length it
// first reads that many bytes and hands them to the test.
func echo(t *testing.T, prefixLen int, prefix chan<- []byte) *tcptest.Backend {
	b := tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		if prefixLen > 0 {
			buf := make([]byte, prefixLen)
			io.ReadFull(c, buf)
			prefix <- buf
		}
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	b.Name = "echo"
	return b
}

func TestPROXYPoolSendsHeaderToMember(t *testing.T) {
	prefix := make(chan []byte, 1)
	e := echo(t, len("PROXY TCP4 127.0.0.1 127.0.0.1 1 1\r\n"), prefix)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	l.Pool.Protocol = model.PoolPROXY
	serve(t, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hi"))
	c.(*net.TCPConn).CloseWrite()
	body, _ := io.ReadAll(c)
	got := <-prefix
	srcPort := c.LocalAddr().(*net.TCPAddr).Port
	want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", srcPort, l.Address.Port())
	if !strings.HasPrefix(want+"hi", string(got)) || string(body) != want[len(got):]+"hi" {
		t.Fatalf("member saw %q then %q; want %q", got, body, want+"hi")
	}
}

func TestHalfCloseAndIntegrity(t *testing.T) { onBothPaths(t, halfCloseAndIntegrity) }

func halfCloseAndIntegrity(t *testing.T, p path) {
	e := echo(t, 0, nil)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	p.serve(t, Options{}, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	size := int64(1 << 30) // 1 GiB through the proxy and back
	if testing.Short() {
		size = 64 << 20
	}
	sent, recv := sha256.New(), sha256.New()
	errc := make(chan error, 1)
	go func() {
		chunk := make([]byte, 256*1024)
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		var n int64
		for n < size {
			chunk[0] = byte(n >> 18)
			if _, err := c.Write(chunk); err != nil {
				errc <- err
				return
			}
			sent.Write(chunk)
			n += int64(len(chunk))
		}
		// Half-close: the echo only finishes after our FIN reaches it through the proxy.
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	n, err := io.Copy(recv, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(sent.Sum(nil), recv.Sum(nil)) {
		t.Fatalf("received %d bytes, want %d; sha256 equal: %v", n, size, bytes.Equal(sent.Sum(nil), recv.Sum(nil)))
	}
}

// The model is applied whole, whatever changed: a change to another load balancer must not
// restart this pool's round robin, or frequent changes would send every client to the
// first member.
func TestOtherChangesKeepRoundRobinTurning(t *testing.T) {
	onBothPaths(t, otherChangesKeepRoundRobinTurning)
}

func otherChangesKeepRoundRobinTurning(t *testing.T, p path) {
	a, b, other := tcptest.Named(t, "a"), tcptest.Named(t, "b"), tcptest.Named(t, "other")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1), mem("b", b, 1))
	l2 := listenerModel(t, model.RoundRobin, mem("other", other, 1))
	l2.Key, l2.Pool.Key = "ns/l2", "ns/p2"
	s := p.serve(t, Options{}, l, l2)
	var got []string
	for i := range 4 {
		got = append(got, answers(t, l.Address, 1)[0])
		l2.Pool.Members[0].Weight = 2 + i
		if failed := s.Apply(model.Model{Listeners: []model.Listener{l, l2}}); len(failed) > 0 {
			t.Fatal(failed)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("answers do not alternate across changes to another pool: %v", got)
		}
	}
}

func TestReconfigurationUnderLoadFailsNothing(t *testing.T) {
	onBothPaths(t, reconfigurationUnderLoadFailsNothing)
}

func reconfigurationUnderLoadFailsNothing(t *testing.T, p path) {
	a, b, c := tcptest.Named(t, "a"), tcptest.Named(t, "b"), tcptest.Named(t, "c")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1), mem("b", b, 1))
	s := p.serve(t, Options{}, l)
	stop := make(chan struct{})
	var failures, ok atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if g, err := get(t, l.Address); err != nil || g == "" {
					failures.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	sets := [][]model.Member{
		{mem("a", a, 1), mem("b", b, 1), mem("c", c, 1)},
		{mem("b", b, 2), mem("c", c, 1)},
		{mem("a", a, 1), mem("c", c, 3)},
	}
	for i := range 20 {
		l.Pool.Members = sets[i%len(sets)]
		if f := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(f) > 0 {
			t.Fatal(f)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d failed and %d good connections during reconfiguration", failures.Load(), ok.Load())
	}
}

func TestBindErrorIsReportedAndOthersServe(t *testing.T) {
	a := tcptest.Named(t, "a")
	good := listenerModel(t, model.RoundRobin, mem("a", a, 1))
	bad := listenerModel(t, model.RoundRobin, mem("a", a, 1))
	bad.Key = "ns/bad"
	bad.Address = a.Addr // already in use by the backend
	s := New(Options{})
	defer s.Close()
	failed := s.Apply(model.Model{Listeners: []model.Listener{good, bad}})
	if failed["ns/bad"] == nil || len(failed) != 1 {
		t.Fatalf("failed = %v", failed)
	}
	if g := answers(t, good.Address, 1)[0]; g != "a" {
		t.Fatal("the good listener does not serve")
	}
}

// waitClosed reads c until the proxy closes it; false if it is still open after limit.
func waitClosed(t *testing.T, c net.Conn, limit time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.ReadAll(c)
	return !isTimeout(err)
}

func TestTrafficKeepsAConnectionOpenPastItsIdleTimeout(t *testing.T) {
	e := echo(t, 0, nil)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	l.TimeoutClientData, l.TimeoutMemberData = time.Second, time.Second
	serve(t, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Ten times the idle timeout, one byte each way every 30 ms.
	buf := make([]byte, 1)
	for i := range 100 {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("echo %d: %v %v", i, buf, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func TestTCPInspectWaitsForTheFirstBytes(t *testing.T) {
	prefix := make(chan []byte, 1)
	e := echo(t, len("hello"), prefix)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	l.TimeoutTCPInspect = time.Minute
	serve(t, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond)
	if e.Hits.Load() != 0 {
		t.Fatal("the member was connected before the client said anything, within timeoutTCPInspect")
	}
	c.Write([]byte("hello"))
	select {
	case got := <-prefix:
		if string(got) != "hello" {
			t.Fatalf("member got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client's first bytes never reached a member")
	}
}

func TestTCPInspectTimeoutConnectsAQuietClient(t *testing.T) {
	a := tcptest.Named(t, "a")
	l := listenerModel(t, model.RoundRobin, mem("a", a, 1))
	l.TimeoutTCPInspect = 100 * time.Millisecond
	serve(t, l)
	// A server-speaks-first protocol: the client only listens, and is answered once the
	// inspection time is over.
	if g, err := get(t, l.Address); err != nil || g != "a" {
		t.Fatalf("got %q, %v", g, err)
	}
}

func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	h, release := holder(t)
	defer close(release)
	l := listenerModel(t, model.RoundRobin, mem("h", h, 1))
	serve(t, l)
	before := runtime.NumGoroutine()
	var conns []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", l.Address.String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Every connection reaches the member through the proxy before goroutines are counted.
	deadline := time.Now().Add(10 * time.Second)
	for h.Hits.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.Hits.Load() < 200 {
		t.Fatalf("%d of 200 connections reached the member", h.Hits.Load())
	}
	// The holder runs one goroutine per connection of its own; the proxy must add none.
	if extra := runtime.NumGoroutine() - before - 200; extra > 10 {
		t.Fatalf("200 idle proxied connections hold %d goroutines of the proxy", extra)
	}
}

// The byte counters follow a connection while it is open, not only once it ends.
func TestMetricsFollowAnOpenConnection(t *testing.T) {
	onBothPaths(t, metricsFollowAnOpenConnection)
}

func metricsFollowAnOpenConnection(t *testing.T, p path) {
	e := echo(t, 0, nil)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	s := p.serve(t, Options{Registerer: prometheus.NewRegistry()}, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("x"), 10000)
	c.Write(msg)
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	in := func() float64 { return value(t, s.metrics.bytesIn.WithLabelValues(l.Key)) }
	out := func() float64 { return value(t, s.metrics.bytesOut.WithLabelValues(l.Key)) }
	deadline := time.Now().Add(10 * time.Second)
	for in() < 10000 || out() < 10000 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the counters of an open connection say %v bytes in, %v out; want 10000 each", in(), out())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a := value(t, s.metrics.active.WithLabelValues(l.Key)); a != 1 {
		t.Fatalf("active connections %v, want 1", a)
	}
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// A member that replies and closes at once (an HTTP server answering "Connection: close")
// has its reply and its FIN read together: every byte must still reach the client, then
// the end, whatever the reply's size against the proxy's read buffer.
func TestClosingReplyArrivesWholeThenTheEnd(t *testing.T) {
	reply := func(size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*31 + size)
		}
		return b
	}
	m := tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		var size int
		fmt.Fscanln(c, &size)
		r := reply(size)
		c.Write(r[:size/2]) // two writes, so the reply may come as two reads
		c.Write(r[size/2:])
	})
	l := listenerModel(t, model.RoundRobin, mem("m", m, 1))
	serve(t, l)
	for _, size := range []int{1, 138, chunk - 1, chunk, chunk + 1, 3 * chunk, 1 << 20} {
		for range 20 {
			c, err := net.Dial("tcp", l.Address.String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintln(c, size)
			got, err := io.ReadAll(c) // ends only with the member's FIN passed on
			c.Close()
			if err != nil {
				t.Fatalf("reply of %d bytes: %v after %d bytes", size, err, len(got))
			}
			if !bytes.Equal(got, reply(size)) {
				t.Fatalf("reply of %d bytes: got %d bytes, equal: false", size, len(got))
			}
		}
	}
}

// Every loop accepts on every socket of a listener: with one loop held up (its goroutine
// blocked here), every new connection is still served, including those the kernel hashes
// to the held loop's socket.
func TestAHeldLoopHoldsUpNoNewConnection(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two loops: GOMAXPROCS >= 2")
	}
	b := tcptest.Named(t, "a")
	l := listenerModel(t, model.RoundRobin, mem("a", b, 1))
	serve(t, l)
	lp, err := loopAt(0)
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	lp.do(func(*loop) { close(held); <-release })
	<-held
	defer close(release)
	for i := range 20 {
		if s, err := get(t, l.Address); s != "a" {
			t.Fatalf("connection %d, with loop 0 held: got %q, %v", i, s, err)
		}
	}
}

// Connections to members carry the congestion control the server was given, whatever the
// host's default; an empty name, or one the kernel does not know, leaves the host's default
// and the traffic flowing.
func TestMemberConnectionsUseTheGivenCongestionControl(t *testing.T) {
	def, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimSpace(string(def))
	for _, tc := range []struct{ asked, want string }{
		{"reno", "reno"}, // built into every kernel, and not this host's default
		{"", host},
		{"no-such-algorithm", host},
	} {
		t.Run(tc.asked, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			member := ln.Addr().(*net.TCPAddr).AddrPort()
			l := listenerModel(t, model.RoundRobin, model.Member{Name: "a", Address: member, MonitorAddress: member, Weight: 1, AdminStateUp: true})
			s := New(Options{MemberCongestion: tc.asked})
			defer s.Close()
			if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
				t.Fatal(failed)
			}
			c, err := net.Dial("tcp", l.Address.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			m, err := ln.Accept()
			if err != nil {
				t.Fatalf("the proxy did not reach the member: %v", err)
			}
			defer m.Close()
			// The proxy runs in this process: its socket to the member is one of ours.
			if got := congestionOfSocketAt(t, m.RemoteAddr().(*net.TCPAddr).AddrPort()); got != tc.want {
				t.Errorf("the connection to the member uses %q, want %q", got, tc.want)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			m.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(m, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("member read %q, %v", buf, err)
			}
		})
	}
}

// congestionOfSocketAt finds this process's TCP socket bound to local and returns its
// congestion control.
func congestionOfSocketAt(t *testing.T, local netip.AddrPort) string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getsockname(fd)
		in, ok := sa.(*unix.SockaddrInet4)
		if err != nil || !ok || netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)) != local {
			continue
		}
		name, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			t.Fatal(err)
		}
		return name
	}
	t.Fatalf("no socket of this process is bound to %v", local)
	return ""
}

// The idle timeout counts bytes moving either way: a reply still draining to a slow reader is
// not idle, though the member sent it all long before and the client sends nothing.
func TestASlowReaderIsNotIdle(t *testing.T) {
	const size = 1 << 20 // all of it read from the member at once, into the proxy's pipe
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	m := tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write(make([]byte, size))
		<-hold // the connection stays open: the member's flow is not over
	})
	l := listenerModel(t, model.RoundRobin, mem("m", m, 1))
	l.TimeoutClientData, l.TimeoutMemberData = time.Second, time.Second
	serve(t, l)
	c, err := net.Dial("tcp", l.Address.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(16 << 10)
	buf := make([]byte, 32<<10)
	got := 0
	for got < size {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		got += n
		if err != nil {
			t.Fatalf("after %d of %d bytes, read slowly (32 KiB every 50 ms, 1.6 s in all, idle timeout 1 s): %v", got, size, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
