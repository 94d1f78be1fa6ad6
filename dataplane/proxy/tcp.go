package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
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
	ln      *net.TCPListener
	cfg     atomic.Pointer[tcpConfig]
	active  atomic.Int64
	metrics *listenerMetrics
	conns   sync.WaitGroup
	log     func(msg string, kv ...any)
}

func (l *tcpListener) serve() {
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
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
		l.conns.Add(1)
		go l.handle(c)
	}
}

// refuse resets the connection at once, so the client learns immediately instead of waiting.
func refuse(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (l *tcpListener) handle(c *net.TCPConn) {
	defer l.conns.Done()
	cfg := l.cfg.Load()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if !cfg.spec.Allowed(src.Addr()) || cfg.pool == nil {
		l.metrics.errors.Inc()
		refuse(c)
		return
	}
	if l.active.Add(1) > int64(cfg.spec.ConnectionLimit) {
		l.active.Add(-1)
		l.metrics.errors.Inc()
		refuse(c)
		return
	}
	defer l.active.Add(-1)
	l.metrics.total.Inc()
	l.metrics.active.Inc()
	defer l.metrics.active.Dec()

	// timeoutTCPInspect: give the client this long to send its first bytes before choosing a
	// member, so they go out in the first segment to the member.
	var first []byte
	if cfg.spec.TimeoutTCPInspect > 0 {
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(cfg.spec.TimeoutTCPInspect))
		n, err := c.Read(buf)
		c.SetReadDeadline(time.Time{})
		if err != nil && !isTimeout(err) {
			c.Close()
			return
		}
		first = buf[:n]
	}

	backend, m, err := cfg.pool.dial(src, cfg.spec.TimeoutMemberConnect)
	if err != nil {
		l.metrics.errors.Inc()
		refuse(c)
		return
	}
	defer m.active.Add(-1)
	m.metrics.total.Inc()
	m.metrics.active.Inc()
	defer m.metrics.active.Dec()

	if h := proxyHeader(cfg.pool.spec.Protocol, src, c.LocalAddr().(*net.TCPAddr).AddrPort()); h != nil {
		first = append(h, first...)
	}
	if len(first) > 0 {
		if _, err := backend.Write(first); err != nil {
			c.Close()
			backend.Close()
			return
		}
	}
	in, out := pipe(c, backend, cfg.spec.TimeoutClientData, cfg.spec.TimeoutMemberData)
	in += int64(len(first))
	l.metrics.bytesIn.Add(float64(in))
	l.metrics.bytesOut.Add(float64(out))
	m.metrics.bytesIn.Add(float64(in))
	m.metrics.bytesOut.Add(float64(out))
}

// pipe copies both ways until both sides are done and returns the bytes each way. Copies use
// io.Copy between the bare *net.TCPConn so Go splices in the kernel; each half-closes its
// destination on EOF. A direction whose source is quiet for its idle timeout ends the
// connection only when the other direction has been quiet too.
func pipe(client, backend *net.TCPConn, clientIdle, memberIdle time.Duration) (in, out int64) {
	var clientSeen, backendSeen atomic.Int64
	now := time.Now().UnixNano()
	clientSeen.Store(now)
	backendSeen.Store(now)
	done := make(chan int64, 1)
	go func() { done <- copyHalf(backend, client, clientIdle, &clientSeen, &backendSeen, client, backend) }()
	out = copyHalf(client, backend, memberIdle, &backendSeen, &clientSeen, client, backend)
	in = <-done
	client.Close()
	backend.Close()
	return in, out
}

func copyHalf(dst, src *net.TCPConn, idle time.Duration, seen, otherSeen *atomic.Int64, client, backend *net.TCPConn) int64 {
	var total int64
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := io.Copy(dst, src)
		total += n
		now := time.Now()
		if n > 0 {
			seen.Store(now.UnixNano())
		}
		switch {
		case err == nil: // EOF: pass the half-close on, let the other direction finish.
			dst.CloseWrite()
			return total
		case isTimeout(err) && (n > 0 || now.Sub(time.Unix(0, otherSeen.Load())) < idle):
			continue // not idle: this side moved, or the other side did
		default: // idle both ways, or a reset: end both directions.
			client.SetLinger(0)
			client.Close()
			backend.Close()
			return total
		}
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
