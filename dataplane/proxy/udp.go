package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l4lb/l4lb/dataplane/model"
)

// udpConfig is what a UDP listener serves with, swapped atomically like tcpConfig.
type udpConfig struct {
	spec model.Listener
	pool *pool
}

// udpListener relays datagrams per client session: the first datagram from a client picks a
// member and opens a connected socket to it; replies go back through the listener's socket,
// so they come from the VIP; a session idle for timeoutClientData ends.
type udpListener struct {
	key     string
	conn    *net.UDPConn
	cfg     atomic.Pointer[udpConfig]
	metrics *listenerMetrics
	log     func(msg string, kv ...any)

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
	closed   bool
}

type udpSession struct {
	client  netip.AddrPort
	backend *net.UDPConn
	m       *member
	seen    atomic.Int64 // unix nanos of the last datagram either way
}

// Datagrams are at most 64 KiB; buffers are pooled so idle sessions hold none between reads.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64*1024); return &b }}

func (s *Server) applyUDP(l model.Listener, pools map[string]*pool) error {
	cfg := &udpConfig{spec: l, pool: poolFor(l, pools)}
	if cur, ok := s.udp[l.Key]; ok {
		if cur.conn.LocalAddr().(*net.UDPAddr).AddrPort() == l.Address {
			cur.cfg.Store(cfg)
			return nil
		}
		cur.close()
		delete(s.udp, l.Key)
	}
	pc, err := listenConfig().ListenPacket(context.Background(), "udp", l.Address.String())
	if err != nil {
		return err
	}
	ul := &udpListener{key: l.Key, conn: pc.(*net.UDPConn), metrics: s.metrics.listener(l.Key),
		sessions: map[netip.AddrPort]*udpSession{}, log: func(msg string, kv ...any) { s.log.Warn(msg, kv...) }}
	ul.cfg.Store(cfg)
	s.udp[l.Key] = ul
	go ul.serve()
	return nil
}

func (u *udpListener) close() {
	u.mu.Lock()
	u.closed = true
	for _, s := range u.sessions {
		s.backend.Close()
	}
	u.mu.Unlock()
	u.conn.Close()
}

func (u *udpListener) serve() {
	buf := make([]byte, 64*1024)
	for {
		n, client, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s := u.session(client)
		if s == nil {
			continue
		}
		s.seen.Store(time.Now().UnixNano())
		if _, err := s.backend.Write(buf[:n]); err == nil {
			u.metrics.bytesIn.Add(float64(n))
			s.m.metrics.bytesIn.Add(float64(n))
		}
	}
}

// session finds or opens the client's session; nil when the client is refused.
func (u *udpListener) session(client netip.AddrPort) *udpSession {
	u.mu.Lock()
	s := u.sessions[client]
	u.mu.Unlock()
	if s != nil {
		return s
	}
	cfg := u.cfg.Load()
	if cfg.pool == nil || !cfg.spec.Allowed(client.Addr()) {
		u.metrics.errors.Inc()
		return nil
	}
	u.mu.Lock()
	full := len(u.sessions) >= cfg.spec.ConnectionLimit
	u.mu.Unlock()
	if full {
		u.metrics.errors.Inc()
		return nil
	}
	m := cfg.pool.pick(client, nil)
	if m == nil {
		u.metrics.errors.Inc()
		return nil
	}
	backend, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(m.spec.Address))
	if err != nil {
		m.metrics.errors.Inc()
		u.metrics.errors.Inc()
		return nil
	}
	s = &udpSession{client: client, backend: backend, m: m}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		backend.Close()
		return nil
	}
	u.sessions[client] = s
	u.mu.Unlock()
	m.active.Add(1)
	m.metrics.total.Inc()
	m.metrics.active.Inc()
	u.metrics.total.Inc()
	u.metrics.active.Inc()
	go u.replies(s, cfg.spec.TimeoutClientData)
	return s
}

// replies relays the member's answers to the client until the session idles out.
func (u *udpListener) replies(s *udpSession, idle time.Duration) {
	defer func() {
		u.mu.Lock()
		if u.sessions[s.client] == s {
			delete(u.sessions, s.client)
		}
		u.mu.Unlock()
		s.backend.Close()
		s.m.active.Add(-1)
		s.m.metrics.active.Dec()
		u.metrics.active.Dec()
	}()
	if idle <= 0 {
		idle = 50 * time.Second
	}
	for {
		last := time.Unix(0, s.seen.Load())
		s.backend.SetReadDeadline(last.Add(idle))
		bp := bufPool.Get().(*[]byte)
		n, err := s.backend.Read(*bp)
		if err != nil {
			bufPool.Put(bp)
			if isTimeout(err) && time.Since(time.Unix(0, s.seen.Load())) < idle {
				continue // the client spoke meanwhile
			}
			return
		}
		s.seen.Store(time.Now().UnixNano())
		if _, err := u.conn.WriteToUDPAddrPort((*bp)[:n], s.client); err == nil {
			u.metrics.bytesOut.Add(float64(n))
			s.m.metrics.bytesOut.Add(float64(n))
		}
		bufPool.Put(bp)
	}
}
