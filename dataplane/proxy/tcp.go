package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/l4lb/l4lb/dataplane/model"
)

// tcpConfig is what a TCP listener serves with; it is swapped atomically on reconfiguration
// and each connection keeps the one it started with.
type tcpConfig struct {
	spec model.Listener
	pool *pool // nil: refuse
}

type tcpListener struct {
	key     string
	lns     []*net.TCPListener // one per core, bound with SO_REUSEPORT
	cfg     atomic.Pointer[tcpConfig]
	active  atomic.Int64
	metrics *listenerMetrics
	log     func(msg string, kv ...any)
}

func (l *tcpListener) close() {
	for _, ln := range l.lns {
		ln.Close()
	}
}

func (l *tcpListener) serve(ln *net.TCPListener) {
	var delay time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log("accept failed", "listener", l.key, "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go l.handle(c)
	}
}

// refuse resets the connection at once, so the client learns immediately instead of waiting.
func refuse(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (l *tcpListener) handle(client *net.TCPConn) {
	cfg := l.cfg.Load()
	src := client.RemoteAddr().(*net.TCPAddr).AddrPort()
	if !cfg.spec.Allowed(src.Addr()) || cfg.pool == nil {
		l.metrics.errors.Inc()
		refuse(client)
		return
	}
	if l.active.Add(1) > int64(cfg.spec.ConnectionLimit) {
		l.active.Add(-1)
		l.metrics.errors.Inc()
		refuse(client)
		return
	}

	// timeoutTCPInspect: give the client this long to send its first bytes before choosing a
	// member, so they go out in the first segment to the member.
	var first []byte
	if cfg.spec.TimeoutTCPInspect > 0 {
		buf := make([]byte, 4096)
		client.SetReadDeadline(time.Now().Add(cfg.spec.TimeoutTCPInspect))
		n, err := client.Read(buf)
		client.SetReadDeadline(time.Time{})
		if err != nil && !isTimeout(err) {
			l.active.Add(-1)
			client.Close()
			return
		}
		first = buf[:n]
	}

	backend, m, err := cfg.pool.dial(src, cfg.spec.TimeoutMemberConnect)
	if err != nil {
		l.active.Add(-1)
		l.metrics.errors.Inc()
		refuse(client)
		return
	}
	c := &conn{l: l, m: m, client: client, backend: backend}
	l.metrics.total.Inc()
	l.metrics.active.Inc()
	m.metrics.total.Inc()
	m.metrics.active.Inc()

	if h := proxyHeader(cfg.pool.spec.Protocol, src, client.LocalAddr().(*net.TCPAddr).AddrPort()); h != nil {
		first = append(h, first...)
	}
	c.early = int64(len(first))
	if len(first) > 0 {
		if _, err := backend.Write(first); err != nil {
			c.finish()
			return
		}
	}
	if err := c.start(cfg.spec.TimeoutClientData, cfg.spec.TimeoutMemberData); err != nil {
		l.log("cannot proxy a connection", "listener", l.key, "err", err)
		client.SetLinger(0)
		c.finish()
	}
}

// conn is one proxied connection: two halves, each copying one way, in the event loop while
// they wait for data and in a goroutine of their own while they move bulk data.
type conn struct {
	l               *tcpListener
	m               *member
	client, backend *net.TCPConn
	halves          [2]half // client to member, member to client
	loop            *loop
	early           int64        // bytes sent to the member before the halves started
	seen            atomic.Int64 // last data either way, unix nanoseconds
	open            atomic.Int32 // halves not ended yet; the last one closes the connection
}

// half copies src to dst. A half whose source is quiet for its idle timeout ends the
// connection only if the other half has been quiet as long (both share conn.seen).
type half struct {
	c              *conn
	src, dst       *net.TCPConn
	srcRaw, dstRaw syscall.RawConn
	fd             int32 // src's descriptor, the loop's key
	idle           time.Duration
	bytes          int64
	inLoop         bool // only the loop changes it once the half is in
	ended          atomic.Bool
}

func (c *conn) start(clientIdle, memberIdle time.Duration) error {
	lp, err := pickLoop()
	if err != nil {
		return err
	}
	c.loop = lp
	c.seen.Store(time.Now().UnixNano())
	c.open.Store(2)
	for i, ends := range [2][2]*net.TCPConn{{c.client, c.backend}, {c.backend, c.client}} {
		h := &c.halves[i]
		h.c, h.src, h.dst, h.idle = c, ends[0], ends[1], clientIdle
		if i == 1 {
			h.idle = memberIdle
		}
		if h.srcRaw, err = h.src.SyscallConn(); err != nil {
			return err
		}
		if h.dstRaw, err = h.dst.SyscallConn(); err != nil {
			return err
		}
		h.srcRaw.Control(func(fd uintptr) { h.fd = int32(fd) })
	}
	for i := range c.halves {
		if err := lp.add(&c.halves[i]); err != nil {
			if i == 1 { // the first half is in: the loop takes it out
				c.halves[1].ended.Store(true)
				c.open.Add(-1)
				lp.post(c)
				return nil
			}
			return err
		}
	}
	return nil
}

// end marks a half done; the last one closes both sockets and accounts for the connection.
func (c *conn) end(h *half) {
	if h.ended.Swap(true) {
		return
	}
	if c.open.Add(-1) == 0 {
		c.finish()
	}
}

func (c *conn) finish() {
	c.client.Close()
	c.backend.Close()
	in, out := c.early+c.halves[0].bytes, c.halves[1].bytes
	c.l.active.Add(-1)
	c.l.metrics.active.Dec()
	c.l.metrics.bytesIn.Add(float64(in))
	c.l.metrics.bytesOut.Add(float64(out))
	c.m.active.Add(-1)
	c.m.metrics.active.Dec()
	c.m.metrics.bytesIn.Add(float64(in))
	c.m.metrics.bytesOut.Add(float64(out))
}

// chunk is the loop's read size; a read that fills it means bulk data, and the half moves to
// a goroutine where io.Copy splices it.
const chunk = 32 << 10

// flush writes what the destination could not take at once, then returns the half to the
// loop.
func (h *half) flush(rest []byte) {
	if _, err := h.dst.Write(rest); err != nil {
		h.c.loop.post(h.c)
		h.c.end(h)
		return
	}
	if err := h.c.loop.add(h); err != nil {
		h.c.loop.post(h.c)
		h.c.end(h)
	}
}

// bulk copies with io.Copy between the bare *net.TCPConn, which splices in the kernel,
// until the source ends. The idle deadline is re-armed from the last activity either way
// only when it fires, not on every read.
func (h *half) bulk() {
	c := h.c
	defer c.end(h)
	if h.idle > 0 {
		h.src.SetReadDeadline(time.Unix(0, c.seen.Load()).Add(h.idle))
	}
	for {
		n, err := io.Copy(h.dst, h.src)
		h.bytes += n
		if n > 0 {
			c.seen.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil: // EOF: pass the half-close on, let the other half finish
			h.dst.CloseWrite()
			return
		case isTimeout(err) && h.idle > 0:
			last := time.Unix(0, c.seen.Load())
			if time.Since(last) < h.idle {
				h.src.SetReadDeadline(last.Add(h.idle))
				continue
			}
		}
		// Idle both ways, or a reset: end the connection.
		c.loop.post(c)
		return
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// localAddr of a listener, as a netip value.
func localAddr(ln net.Listener) netip.AddrPort {
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
