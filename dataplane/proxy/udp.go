package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

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
	bytesIn atomic.Int64 // not yet added to the member's metrics
}

// Datagrams are at most 64 KiB; buffers are pooled.
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

// batch is how many datagrams one recvmmsg(2) may return: under load one system call reads
// many, idle it costs nothing more.
const batch = 32

func (u *udpListener) serve() {
	pc := ipv4.NewPacketConn(u.conn)
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 64*1024)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now().UnixNano()
		var in float64
		for i := range n {
			m := &msgs[i]
			client := m.Addr.(*net.UDPAddr).AddrPort()
			s := u.session(client)
			if s == nil {
				continue
			}
			s.seen.Store(now)
			if _, err := s.backend.Write(m.Buffers[0][:m.N]); err == nil {
				in += float64(m.N)
				s.bytesIn.Add(int64(m.N))
			}
		}
		u.metrics.bytesIn.Add(in)
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

// replies relays the member's answers to the client until the session idles out. The read
// deadline is re-armed only when it fires, from the last datagram either way.
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
		s.m.metrics.bytesIn.Add(float64(s.bytesIn.Swap(0)))
		u.metrics.active.Dec()
	}()
	if idle <= 0 {
		idle = 50 * time.Second
	}
	s.backend.SetReadDeadline(time.Now().Add(idle))
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var out, count int64
	flush := func() {
		u.metrics.bytesOut.Add(float64(out))
		s.m.metrics.bytesOut.Add(float64(out))
		s.m.metrics.bytesIn.Add(float64(s.bytesIn.Swap(0)))
		out = 0
	}
	defer flush()
	for {
		n, err := s.backend.Read(*bp)
		if err != nil {
			last := time.Unix(0, s.seen.Load())
			if isTimeout(err) && time.Since(last) < idle {
				s.backend.SetReadDeadline(last.Add(idle))
				continue // the client spoke meanwhile
			}
			return
		}
		s.seen.Store(time.Now().UnixNano())
		if _, err := u.conn.WriteToUDPAddrPort((*bp)[:n], s.client); err == nil {
			out += int64(n)
		}
		// Metrics are shared between cores; add to them now and then, not per datagram.
		if count++; count%64 == 0 {
			flush()
		}
	}
}
