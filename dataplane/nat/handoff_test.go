package nat_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// namedTCP listens on 127.0.0.1 and greets each connection with name, then echoes lines.
func namedTCP(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	return tcptest.Serve(t, "127.0.0.1:0", func(c net.Conn) {
		fmt.Fprintln(c, name)
		io.Copy(c, c)
	}).Addr
}

type tcpClient struct {
	c net.Conn
	r *bufio.Reader
}

// dial connects to addr and returns the connection and who greeted it.
func dial(t *testing.T, addr netip.AddrPort) (*tcpClient, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc := &tcpClient{c: c, r: bufio.NewReader(c)}
	return tc, tc.line(t)
}

func (tc *tcpClient) line(t *testing.T) string {
	t.Helper()
	tc.c.SetDeadline(time.Now().Add(2 * time.Second))
	s, err := tc.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(s)
}

func (tc *tcpClient) echo(t *testing.T, msg string) {
	t.Helper()
	tc.c.SetDeadline(time.Now().Add(2 * time.Second)) // the last one may have passed
	if _, err := fmt.Fprintln(tc.c, msg); err != nil {
		t.Fatal(err)
	}
	if got := tc.line(t); got != msg {
		t.Fatalf("echo %q: %q", msg, got)
	}
}

// The hand-off of a TCP listener to the kernel: connections the agent's listener already
// holds stay with it (only a SYN opens a flow in the table), new ones go to the members round
// robin; once retired, new connections reach the listener again while those the kernel
// started keep their member, and the table is counted until they end.
func TestTCPHandOffAndRetire(t *testing.T) {
	tb := udptest.KernelTable(t, 0x4e)
	agent := namedTCP(t, "agent")
	before, who := dial(t, agent)
	if who != "agent" {
		t.Fatalf("before the hand-off: greeted by %q", who)
	}
	apply(t, tb, nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: agent, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "a", Address: namedTCP(t, "a"), Weight: 1}, {Key: "b", Address: namedTCP(t, "b"), Weight: 1}}})
	before.echo(t, "still the agent's")
	var carried *tcpClient
	seen := map[string]int{}
	for range 4 {
		c, who := dial(t, agent)
		seen[who]++
		carried = c
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Fatalf("new connections during the hand-off went to %v, want a and b twice each", seen)
	}
	if n, err := nat.FlowsOf(0x4e); err != nil || n < 4 {
		t.Fatalf("flows of the table: %d, %v; want at least 4", n, err)
	}

	carried.echo(t, "before retire")
	if err := nat.Retire(tb.Name()); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, agent); who != "agent" {
		t.Fatalf("after retiring the table a new connection was greeted by %q", who)
	}
	carried.echo(t, "still the member's")
	if ok, err := nat.Exists(tb.Name()); err != nil || !ok {
		t.Fatalf("the retired table is gone (%v, %v): it must stay hooked while its flows last", ok, err)
	}
}

// A hand-off table has an end: past its limit (Expire) the kernel sends new connections to
// the listener's own address again (no agent has taken over: nothing listens there, so they
// are refused), while the connections it started go on with their members.
func TestAHandOffTableEndsByItself(t *testing.T) {
	tb := udptest.KernelTable(t, 0x4e)
	agent := namedTCP(t, "agent") // stands for whatever the address reaches without the table
	const limit = 2 * time.Second
	tb.Expire(limit)
	start := time.Now()
	apply(t, tb, nat.Listener{Key: "ns/l", Protocol: model.TCP, Address: agent, Algorithm: model.RoundRobin,
		Members: []nat.Member{{Key: "a", Address: namedTCP(t, "a"), Weight: 1}}})
	carried, who := dial(t, agent)
	if who != "a" {
		t.Fatalf("during the hand-off a new connection was greeted by %q, want the member", who)
	}
	time.Sleep(time.Until(start.Add(limit + 500*time.Millisecond)))
	if _, who := dial(t, agent); who != "agent" {
		t.Fatalf("past the limit a new connection was greeted by %q: the table still starts flows", who)
	}
	carried.echo(t, "still the member's")
}
