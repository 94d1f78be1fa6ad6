package health

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/model"
)

func TestCounterRiseAndFall(t *testing.T) {
	c := Counter{Up: true}
	steps := []struct {
		ok      bool
		changed bool
		up      bool
	}{
		{false, false, true}, {false, false, true}, {true, false, true}, // a success resets the fall
		{false, false, true}, {false, false, true}, {false, true, false}, // fall = 3
		{true, false, false}, {true, true, true}, // rise = 2
	}
	for i, s := range steps {
		if changed := c.Observe(s.ok, 2, 3); changed != s.changed || c.Up != s.up {
			t.Fatalf("step %d: changed=%v up=%v, want %v %v", i, changed, c.Up, s.changed, s.up)
		}
	}
}

func addrOf(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func check(t *testing.T, m *model.Monitor, target netip.AddrPort) error {
	t.Helper()
	c, err := NewChecker(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Check(ctx, target)
}

// closedPort returns a loopback TCP address nobody listens on.
func closedPort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := addrOf(t, c.LocalAddr())
		c.Close()
		return a
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := addrOf(t, l.Addr())
	l.Close()
	return a
}

func httpMonitor(typ model.MonitorType, codes string) *model.Monitor {
	c, err := model.ParseCodes(codes)
	if err != nil {
		panic(err)
	}
	return &model.Monitor{Type: typ, HTTPMethod: "GET", URLPath: "/health", HTTPVersion: "1.0", ExpectedCodes: c,
		Delay: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 2, Fall: 2}
}

func TestTCPChecker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := check(t, &model.Monitor{Type: model.MonitorTCP}, addrOf(t, l.Addr())); err != nil {
		t.Fatalf("listening member reported down: %v", err)
	}
	if err := check(t, &model.Monitor{Type: model.MonitorTCP}, closedPort(t, "tcp")); err == nil {
		t.Fatal("closed port reported up")
	}
}

func TestHTTPCheckerExpectedCodes(t *testing.T) {
	status := 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	target := addrOf(t, srv.Listener.Addr())
	cases := []struct {
		codes  string
		status int
		up     bool
	}{
		{"200", 200, true}, {"200", 204, false}, {"200-204", 204, true}, {"200,202", 201, false},
		{"200,202", 202, true}, {"500-599", 503, true}, {"200", 503, false},
	}
	for _, tc := range cases {
		status = tc.status
		err := check(t, httpMonitor(model.MonitorHTTP, tc.codes), target)
		if (err == nil) != tc.up {
			t.Errorf("codes %s, status %d: err=%v, want up=%v", tc.codes, tc.status, err, tc.up)
		}
	}
	tls := httptest.NewTLSServer(srv.Config.Handler)
	defer tls.Close()
	status = 200
	if err := check(t, httpMonitor(model.MonitorHTTPS, "200"), addrOf(t, tls.Listener.Addr())); err != nil {
		t.Errorf("HTTPS: %v", err)
	}
	if err := check(t, &model.Monitor{Type: model.MonitorTLSHello}, addrOf(t, tls.Listener.Addr())); err != nil {
		t.Errorf("TLS-HELLO against a TLS server: %v", err)
	}
	if err := check(t, &model.Monitor{Type: model.MonitorTLSHello}, target); err == nil {
		t.Error("TLS-HELLO against a plain HTTP server reported up")
	}
}

// requestLine captures what a check sends, to verify the HTTP version and Host header.
func requestLine(t *testing.T, m *model.Monitor) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var head []string
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
			head = append(head, strings.TrimSpace(line))
		}
		c.Write([]byte("HTTP/1.0 200 OK\r\n\r\n"))
		got <- strings.Join(head, "|")
	}()
	if err := check(t, m, addrOf(t, l.Addr())); err != nil {
		t.Fatal(err)
	}
	return <-got
}

func TestHTTPVersionAndHost(t *testing.T) {
	m := httpMonitor(model.MonitorHTTP, "200")
	if head := requestLine(t, m); !strings.HasPrefix(head, "GET /health HTTP/1.0|") || strings.Contains(head, "Host:") {
		t.Errorf("HTTP/1.0 check sent %q", head)
	}
	m.HTTPVersion, m.DomainName, m.HTTPMethod = "1.1", "app.example.org", "HEAD"
	if head := requestLine(t, m); !strings.HasPrefix(head, "HEAD /health HTTP/1.1|Host: app.example.org|") {
		t.Errorf("HTTP/1.1 check sent %q", head)
	}
}

func TestBlackHoleTimesOut(t *testing.T) {
	// Accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c, _ := NewChecker(httpMonitor(model.MonitorHTTP, "200"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Check(ctx, addrOf(t, l.Addr())); err == nil {
		t.Fatal("a member that answers nothing reported up")
	}
}

func TestUDPConnectChecker(t *testing.T) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := &model.Monitor{Type: model.MonitorUDPConnect}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	checker, _ := NewChecker(m)
	if err := checker.Check(ctx, addrOf(t, c.LocalAddr())); err != nil {
		t.Errorf("open UDP port reported down: %v", err)
	}
	if err := check(t, m, closedPort(t, "udp")); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("closed UDP port: %v, want port unreachable", err)
	}
}

func TestPingChecker(t *testing.T) {
	err := check(t, &model.Monitor{Type: model.MonitorPing}, netip.MustParseAddrPort("127.0.0.1:0"))
	if os.Geteuid() == 0 {
		if err != nil {
			t.Fatalf("ping 127.0.0.1 as root: %v", err)
		}
		return
	}
	// Without the privilege the error must say what is missing.
	if err != nil && !strings.Contains(err.Error(), "ICMP") {
		t.Fatalf("unclear error: %v", err)
	}
}

func TestManagerPublishesTransitions(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, l.Addr())
	events := make(chan Event, 10)
	m := NewManager(func(e Event) { events <- e })
	defer m.Close()
	mon := &model.Monitor{Type: model.MonitorTCP, Delay: 20 * time.Millisecond, Timeout: 15 * time.Millisecond, Rise: 2, Fall: 2}
	target := Target{Pool: "ns/p", Member: "a", Address: addr, Monitor: mon}
	m.Sync([]Target{target})
	if !m.Up("ns/p", "a", addr) {
		t.Fatal("a new member must start up")
	}
	l.Close()
	e := wait(t, events)
	if e.Up || e.Member != "a" || e.Reason == "" {
		t.Fatalf("event %+v, want a down transition with a reason", e)
	}
	if m.Up("ns/p", "a", addr) {
		t.Fatal("Up disagrees with the event")
	}
	// The same member with a changed monitor keeps its state.
	mon2 := *mon
	mon2.Rise = 3
	m.Sync([]Target{{Pool: "ns/p", Member: "a", Address: addr, Monitor: &mon2}})
	if m.Up("ns/p", "a", addr) {
		t.Fatal("a monitor change reset the member's state")
	}
	l2, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if e := wait(t, events); !e.Up {
		t.Fatalf("event %+v, want up", e)
	}
	m.Sync(nil)
	if !m.Up("ns/p", "a", addr) {
		t.Fatal("an unchecked member counts as up")
	}
}

func wait(t *testing.T, events chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no transition published")
	}
	return Event{}
}
