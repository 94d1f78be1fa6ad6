package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// kernelOptions gives a server the kernel path, in an nftables table of the test's own. Its
// tag is no other test's in the machine's namespace (nat's: 0x4d, 0x4e; proxy_test's: 0x4f):
// packages' tests run side by side, and a table ends flows by its tag (a member removed, say),
// so with a shared tag one test could end another's connection.
func kernelOptions(t *testing.T, reg prometheus.Registerer) Options {
	return Options{NAT: udptest.KernelTable(t, 0x4b), KernelUDP: true, Registerer: reg}
}

// kernelListener is udpListenerModel on a port held for the test: the kernel binds nothing.
func kernelListener(t *testing.T, members map[string]netip.AddrPort) model.Listener {
	l := udpListenerModel(t, 100, time.Minute, members)
	l.Address = udptest.HeldPort(t, "127.0.0.1")
	return l
}

// serveKernel is serve with the kernel path.
func serveKernel(t *testing.T, ls ...model.Listener) *Server {
	t.Helper()
	s := New(kernelOptions(t, nil))
	if failed := s.Apply(model.Model{Listeners: ls}); len(failed) > 0 {
		t.Fatal(failed)
	}
	t.Cleanup(s.Close)
	return s
}

// The kernel carries the UDP listeners whose settings it honours; the proxy the others, and
// a listener moves between the two when its settings change.
func TestKernelCarriesWhatItCanHonour(t *testing.T) {
	members := map[string]netip.AddrPort{"a": udptest.Echo(t, "a"), "b": udptest.Echo(t, "b")}
	rr := udpListenerModel(t, 100, time.Minute, members)
	rr.Address = freeUDPPort(t, "127.0.3.1") // not held, as the proxy will bind it
	lc := udpListenerModel(t, 100, time.Minute, members)
	lc.Key, lc.Pool.Key, lc.Pool.Algorithm = "ns/lc", "ns/lcp", model.LeastConnections
	s := serveKernel(t, rr, lc)
	if _, ok := s.kernel[rr.Key]; !ok || s.udp[rr.Key] != nil {
		t.Fatal("the kernel does not carry a round-robin UDP listener")
	}
	if _, ok := s.kernel[lc.Key]; ok || s.udp[lc.Key] == nil {
		t.Fatal("the kernel carries a LEAST_CONNECTIONS listener, whose choice needs connection counts")
	}
	if value(t, s.metrics.inKernel.WithLabelValues(rr.Key)) != 1 || value(t, s.metrics.inKernel.WithLabelValues(lc.Key)) != 0 {
		t.Fatal("l4lb_listener_in_kernel does not say which path carries each listener")
	}
	for _, l := range []model.Listener{rr, lc} {
		seen := map[string]bool{}
		for range 4 {
			reply, from := askUDP(t, udpClient(t, l.Address), "x")
			if from != l.Address {
				t.Fatalf("%s: reply from %v", l.Key, from)
			}
			seen[reply[:1]] = true
		}
		if !seen["a"] || !seen["b"] {
			t.Fatalf("%s: flows went to %v only", l.Key, seen)
		}
	}
	rr.Pool.Persistence = &model.Persistence{Timeout: time.Minute, Bits: 32}
	if failed := s.Apply(model.Model{Listeners: []model.Listener{rr, lc}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	if _, ok := s.kernel[rr.Key]; ok || s.udp[rr.Key] == nil {
		t.Fatal("session persistence did not move the listener to the proxy")
	}
	if reply, _ := askUDP(t, udpClient(t, rr.Address), "x"); reply[2:] != "x" {
		t.Fatalf("answer %q", reply)
	}
}

func TestKernelFlowsFollowTheirMemberThroughChanges(t *testing.T) {
	sessionFollowsItsMember(t, serveKernel, kernelListener)
}

// The kernel's counters reach the listener's and the member's metrics.
func TestKernelTrafficShowsInTheMetrics(t *testing.T) {
	a := udptest.Echo(t, "a")
	l := kernelListener(t, map[string]netip.AddrPort{"a": a})
	reg := prometheus.NewRegistry()
	s := New(kernelOptions(t, reg))
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	t.Cleanup(s.Close)
	c := udpClient(t, l.Address)
	for range 3 {
		askUDP(t, c, "12345")
	}
	// The counters are read each second, the open flows counted less often.
	deadline := time.Now().Add(2 * openFlowsEvery)
	for (value(t, s.metrics.bytesIn.WithLabelValues(l.Key)) < 15 || value(t, s.metrics.active.WithLabelValues(l.Key)) < 1) &&
		time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for name, got := range map[string]float64{
		"listener bytes in":   value(t, s.metrics.bytesIn.WithLabelValues(l.Key)),
		"listener bytes out":  value(t, s.metrics.bytesOut.WithLabelValues(l.Key)),
		"listener flows":      value(t, s.metrics.total.WithLabelValues(l.Key)),
		"listener open flows": value(t, s.metrics.active.WithLabelValues(l.Key)),
		"member bytes in":     value(t, s.metrics.memberBytesIn.WithLabelValues(l.Pool.Key, "a", a.String())),
		"member flows":        value(t, s.metrics.memberTotal.WithLabelValues(l.Pool.Key, "a", a.String())),
		"member open flows":   value(t, s.metrics.memberActive.WithLabelValues(l.Pool.Key, "a", a.String())),
	} {
		want := map[string]float64{"listener bytes in": 15, "listener bytes out": 21, "listener flows": 1,
			"listener open flows": 1, "member bytes in": 15, "member flows": 1, "member open flows": 1}[name]
		if got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	// The conntrack table the flow lives in: its size and use (at least this flow).
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]float64{}
	for _, f := range families {
		if m := f.GetMetric(); len(m) == 1 && m[0].GetGauge() != nil {
			seen[f.GetName()] = m[0].GetGauge().GetValue()
		} else if len(m) == 1 && m[0].GetCounter() != nil {
			seen[f.GetName()] = m[0].GetCounter().GetValue()
		}
	}
	if seen["l4lb_conntrack_entries"] < 1 || seen["l4lb_conntrack_max"] < seen["l4lb_conntrack_entries"] {
		t.Errorf("conntrack metrics: %v; want at least this flow, within the table's size", seen)
	}
	for _, name := range []string{"l4lb_conntrack_drops_total", "l4lb_syn_cookies_sent_total", "l4lb_syn_cookies_valid_total", "l4lb_syn_cookies_invalid_total"} {
		if _, ok := seen[name]; !ok {
			t.Errorf("no %s in %v", name, seen)
		}
	}
}

// The server puts the kernel's rules back when something outside removes them.
func TestKernelRulesComeBackAfterAFlush(t *testing.T) {
	l := kernelListener(t, map[string]netip.AddrPort{"a": udptest.Echo(t, "a")})
	opts := kernelOptions(t, nil)
	s := New(opts)
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	t.Cleanup(s.Close)
	askUDP(t, udpClient(t, l.Address), "x")
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	conn.DelTable(&nftables.Table{Name: opts.NAT.Name(), Family: nftables.TableFamilyINet})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * kernelStatsEvery)
	for {
		c := udpClient(t, l.Address)
		c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		c.Write([]byte("x"))
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "a:x" {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener did not answer again after its table was deleted")
		}
	}
}

// refusing is a kernel table that refuses one listener, as a kernel without a module one of
// its settings needs would; it counts the Applies that offered it.
type refusing struct {
	*nat.Table
	key    *string
	offers *int
}

func (r refusing) Apply(ls []nat.Listener) error {
	i := slices.IndexFunc(ls, func(l nat.Listener) bool { return l.Key == *r.key })
	if i < 0 {
		return r.Table.Apply(ls)
	}
	*r.offers++
	if err := r.Table.Apply(slices.Delete(slices.Clone(ls), i, i+1)); err != nil {
		return err
	}
	return &nat.RefusedError{Listeners: map[string]error{*r.key: errors.New("no such module")}}
}

// A UDP listener the kernel refuses is served by the proxy, the others stay in the kernel;
// it is offered to the kernel again only once its settings change.
func TestAListenerTheKernelRefusesIsServedByTheProxy(t *testing.T) {
	a := kernelListener(t, map[string]netip.AddrPort{"a": udptest.Echo(t, "a")})
	b := udpListenerModel(t, 100, time.Minute, map[string]netip.AddrPort{"b": udptest.Echo(t, "b")})
	a.Key, a.Pool.Key, b.Key, b.Pool.Key = "ns/a", "ns/ap", "ns/b", "ns/bp"
	b.Address = freeUDPPort(t, "127.0.3.2") // not held, as the proxy will bind it
	key, offers := b.Key, 0
	opts := kernelOptions(t, nil)
	s := newServer(opts, refusing{opts.NAT, &key, &offers})
	t.Cleanup(s.Close)
	apply := func() {
		t.Helper()
		if failed := s.Apply(model.Model{Listeners: []model.Listener{a, b}}); len(failed) > 0 {
			t.Fatal(failed)
		}
		for _, l := range []model.Listener{a, b} {
			if reply, from := askUDP(t, udpClient(t, l.Address), "x"); from != l.Address || reply != l.Pool.Members[0].Name+":x" {
				t.Fatalf("%s: %q from %v", l.Key, reply, from)
			}
		}
	}
	apply()
	if _, ok := s.kernel[a.Key]; !ok || s.udp[b.Key] == nil {
		t.Fatalf("the kernel carries %v, the proxy %v: want a in the kernel, b in the proxy", s.kernel, s.udp)
	}
	if value(t, s.metrics.inKernel.WithLabelValues(a.Key)) != 1 || value(t, s.metrics.inKernel.WithLabelValues(b.Key)) != 0 {
		t.Fatal("l4lb_listener_in_kernel does not say which path carries each listener")
	}
	apply()
	if offers != 1 {
		t.Fatalf("the unchanged refused listener was offered to the kernel %d times, want once", offers)
	}
	key = "" // the kernel would take it now, as after a module is loaded
	b.TimeoutClientData = 2 * time.Minute
	apply()
	if _, ok := s.kernel[b.Key]; !ok || s.udp[b.Key] != nil {
		t.Fatal("the refused listener did not go to the kernel when its settings changed")
	}
}

// A TCP connection the kernel carries ends once idle for the shorter data timeout (whole
// seconds: conntrack's unit); until then it goes on, through a change of its member's
// weight and health, as the proxy's do.
func TestKernelTCPConnectionsIdleOutAndOutliveTheirMemberGoingDown(t *testing.T) {
	e := echo(t, 0, nil)
	l := listenerModel(t, model.RoundRobin, mem("e", e, 1))
	l.TimeoutClientData, l.TimeoutMemberData = time.Hour, time.Second
	s := path{"kernel", true}.serve(t, Options{}, l)
	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", l.Address.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := dial()
	l.Pool.Members[0].AdminStateUp = false
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		if err := roundTrip(c); err != nil {
			t.Fatalf("an open connection ended when its member was disabled: %v", err)
		}
	}
	l.Pool.Members[0].AdminStateUp = true
	if failed := s.Apply(model.Model{Listeners: []model.Listener{l}}); len(failed) > 0 {
		t.Fatal(failed)
	}
	c = dial()
	time.Sleep(2500 * time.Millisecond)
	if err := roundTrip(c); err == nil {
		t.Fatal("a connection idle past timeoutMemberData (1 s) still carried bytes")
	}
}

// A listener is flooded when more of its connections are half-open than SynCookiesAbove (a
// stack's full backlog), and stays so while the SYN proxy answers SYNs at a rate that would
// have kept that many (its half-open connections are gone once it answers them all).
func TestAListenerIsFloodedByItsHalfOpenConnections(t *testing.T) {
	s := &Server{opts: Options{SynCookiesAbove: 1000}, log: slog.New(slog.DiscardHandler)}
	flooded := map[string]bool{}
	look := func(halfOpen int, cookies uint64) bool {
		s.watchFlood("ns/l", map[string]nat.Counts{"a": {HalfOpen: halfOpen / 2}, "b": {HalfOpen: halfOpen - halfOpen/2}}, cookies, flooded)
		return flooded["ns/l"]
	}
	for i, step := range []struct {
		halfOpen int
		cookies  uint64 // answered by the SYN proxy since the last look (a second)
		want     bool
	}{
		{10, 0, false},   // ordinary traffic
		{1000, 0, false}, // at the count, not over it
		{1001, 0, true},  // over it, on two members
		{0, 5000, true},  // the SYN proxy answers the flood: nothing is half-open
		{0, 201, true},   // still more than would keep 1,000 for 5 s
		{0, 150, false},  // the flood is over
		{0, 5000, false}, // cookies alone do not start a flood
		{2000, 0, true},  // a flood again
	} {
		if got := look(step.halfOpen, step.cookies); got != step.want {
			t.Fatalf("step %d (%d half-open, %d cookies): flooded %v, want %v", i, step.halfOpen, step.cookies, got, step.want)
		}
	}
	s.opts.SynCookiesAbove = 0
	if look(1<<20, 0) {
		t.Fatal("with SynCookiesAbove 0 a listener was flooded")
	}
}
