package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	conns   sync.WaitGroup
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

// pipe copies both ways until both sides are done and returns the bytes each way. Each
// direction half-closes its destination on EOF. A direction whose source is quiet for its
// idle timeout ends the connection only when the other direction has been quiet too.
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

// chunk is the read size of the small-message path; a read that fills it means bulk data,
// and the direction switches to splice(2).
const chunk = 32 << 10

var chunks = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// copyHalf copies src to dst. Small messages (requests, responses) go through one read and
// one write with a pooled buffer taken only once data is there, so an idle connection holds
// no buffer; once a read fills the buffer the rest is spliced in the kernel by io.Copy between
// the bare *net.TCPConn. The idle deadline is re-armed from the last activity of either
// direction only when it fires, not on every read.
func copyHalf(dst, src *net.TCPConn, idle time.Duration, seen, otherSeen *atomic.Int64, client, backend *net.TCPConn) int64 {
	var total int64
	rc, err := src.SyscallConn()
	if err != nil {
		return 0
	}
	if idle > 0 {
		src.SetReadDeadline(time.Now().Add(idle))
	}
	bulk := false
	for {
		var n int64
		if bulk {
			n, err = io.Copy(dst, src)
			if err == nil {
				err = io.EOF
			}
		} else {
			n, err = readWrite(rc, dst)
			bulk = n == chunk
		}
		total += n
		if n > 0 {
			seen.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF): // pass the half-close on, let the other direction finish.
			dst.CloseWrite()
			return total
		case isTimeout(err) && idle > 0:
			last := time.Unix(0, max(seen.Load(), otherSeen.Load()))
			if time.Since(last) < idle {
				src.SetReadDeadline(last.Add(idle))
				continue
			}
		}
		// Idle both ways, or a reset: end both directions.
		client.SetLinger(0)
		client.Close()
		backend.Close()
		return total
	}
}

// readWrite waits until src is readable, reads once into a pooled buffer and writes that to
// dst.
func readWrite(src syscall.RawConn, dst *net.TCPConn) (int64, error) {
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	err := src.Read(func(fd uintptr) bool {
		bp = chunks.Get().(*[]byte)
		n, rerr = unix.Read(int(fd), *bp)
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			chunks.Put(bp)
			bp = nil
			return false // wait for readability, holding no buffer
		}
		return true
	})
	if bp != nil {
		defer chunks.Put(bp)
	}
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	_, err = dst.Write((*bp)[:n])
	return int64(n), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// localAddr of a listener, as a netip value.
func localAddr(ln net.Listener) netip.AddrPort {
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
