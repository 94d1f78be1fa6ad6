// Package health runs Octavia's health monitors against pool members: one Checker per
// monitor type, rise and fall counted in one place (Counter), transitions published to a
// subscriber.
package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/l4lb/l4lb/internal/model"
)

// Checker checks one member once; nil means healthy. The context carries the monitor's timeout.
type Checker interface {
	Check(ctx context.Context, target netip.AddrPort) error
}

// NewChecker returns the checker of a monitor type.
func NewChecker(m *model.Monitor) (Checker, error) {
	switch m.Type {
	case model.MonitorTCP:
		return tcpChecker{}, nil
	case model.MonitorHTTP, model.MonitorHTTPS:
		return &httpChecker{m: m, tls: m.Type == model.MonitorHTTPS}, nil
	case model.MonitorTLSHello:
		return tlsHelloChecker{}, nil
	case model.MonitorUDPConnect:
		return udpConnectChecker{}, nil
	case model.MonitorPing:
		return pingChecker{}, nil
	}
	return nil, fmt.Errorf("unknown monitor type %q", m.Type)
}

var dialer net.Dialer

type tcpChecker struct{}

func (tcpChecker) Check(ctx context.Context, target netip.AddrPort) error {
	c, err := dialer.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	return c.Close()
}

// httpChecker writes the request itself rather than using net/http's client, because Octavia's
// monitors may speak HTTP/1.0 (without Host) and net/http always speaks 1.1.
type httpChecker struct {
	m   *model.Monitor
	tls bool
}

func (h *httpChecker) Check(ctx context.Context, target netip.AddrPort) error {
	conn, err := dialer.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if h.tls {
		tc := tls.Client(conn, &tls.Config{
			// Octavia does not verify member certificates either: the check is of liveness.
			InsecureSkipVerify: true, //nolint:gosec
			ServerName:         h.m.DomainName,
		})
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	host := h.m.DomainName
	if host == "" {
		host = target.String()
	}
	req := fmt.Sprintf("%s %s HTTP/%s\r\n", h.m.HTTPMethod, h.m.URLPath, h.m.HTTPVersion)
	if h.m.HTTPVersion == "1.1" || h.m.DomainName != "" {
		req += "Host: " + host + "\r\n"
	}
	req += "User-Agent: l4lb-health-check\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return err
	}
	code, err := readStatus(conn, h.m.HTTPMethod)
	if err != nil {
		return err
	}
	if !h.m.ExpectedCodes.Match(code) {
		return fmt.Errorf("status %d is not expected", code)
	}
	return nil
}

// maxResponse bounds what a check reads of a member's answer (status line, headers and what
// of the body is drained): a hostile or broken member cannot grow the agent's memory, and a
// longer answer fails the check once the bound is reached.
const maxResponse = 16 << 10

// readStatus reads an HTTP response's status code from r, reading at most maxResponse bytes.
func readStatus(r io.Reader, method string) (int, error) {
	resp, err := http.ReadResponse(bufio.NewReaderSize(io.LimitReader(r, maxResponse), 4096), &http.Request{Method: method})
	if err != nil {
		return 0, fmt.Errorf("reading the response (at most %d bytes): %w", maxResponse, err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

type tlsHelloChecker struct{}

func (tlsHelloChecker) Check(ctx context.Context, target netip.AddrPort) error {
	conn, err := dialer.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // liveness only
	return tc.HandshakeContext(ctx)
}

// udpConnectChecker sends a datagram; an ICMP port unreachable (ECONNREFUSED on the connected
// socket) means down, an answer or silence until the timeout means up, as in Octavia.
type udpConnectChecker struct{}

func (udpConnectChecker) Check(ctx context.Context, target netip.AddrPort) error {
	conn, err := dialer.DialContext(ctx, "udp", target.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Second)
	}
	conn.SetDeadline(dl)
	if _, err := conn.Write([]byte("l4lb-health-check\n")); err != nil {
		return err
	}
	buf := make([]byte, 512)
	_, err = conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("port unreachable")
	}
	return err
}

// pingChecker sends one ICMP echo. It needs a raw ICMP socket (root or CAP_NET_RAW) or an
// unprivileged ping socket (net.ipv4.ping_group_range); without either it says so.
type pingChecker struct{}

func (pingChecker) Check(ctx context.Context, target netip.AddrPort) error {
	addr := target.Addr().Unmap()
	network, proto, echo := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
	listen := "0.0.0.0"
	if addr.Is6() {
		network, proto, echo, listen = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, "::"
	}
	c, err := icmp.ListenPacket(network, listen)
	if err != nil {
		return fmt.Errorf("PING monitor needs a raw ICMP socket (root or CAP_NET_RAW): %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	id, seq := os.Getpid()&0xffff, int(time.Now().UnixNano()&0xffff)
	msg := icmp.Message{Type: echo, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("l4lb")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		rm, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && from.String() == addr.String() &&
			(rm.Type == ipv4.ICMPTypeEchoReply || rm.Type == ipv6.ICMPTypeEchoReply) {
			return nil
		}
	}
}
