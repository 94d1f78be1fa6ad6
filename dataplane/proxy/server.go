// Package proxy is the dataplane engine: it serves a model.Model, proxying TCP and UDP from
// listeners to pool members with Octavia's algorithms, limits, timeouts and health monitors,
// and reconfigures live without dropping established connections.
package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/dataplane/health"
	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
)

// Options configure a Server.
type Options struct {
	// Registerer receives the Prometheus metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// OnHealth is told of every member health transition (the agent reports them).
	OnHealth func(health.Event)
	Logger   *slog.Logger
	// NAT, when set, carries in the kernel (package nat) the listeners of the protocols
	// KernelUDP and KernelTCP name whose settings it can honour; the Server keeps it
	// programmed with members and health. The caller closes it.
	NAT                  *nat.Table
	KernelUDP, KernelTCP bool
	// SynCookiesAbove is the number of a kernel-path TCP listener's half-open connections
	// (answered by a member, not by the client) over which the node answers its SYNs with
	// SYN cookies (nat.Table.Flood); 0: never.
	SynCookiesAbove uint32
	// MemberCongestion is the TCP congestion control of connections to members ("cubic",
	// say); empty keeps the host's default. Client connections always keep the host's.
	MemberCongestion string
}

// DefaultSynCookiesAbove is the agent's count of a kernel-path listener's half-open
// connections over which its SYNs get SYN cookies. A client answers within a round trip, so
// ordinary traffic keeps a few (tens of thousands of connections a second over a 50 ms
// round trip would keep 1,000); a flood from spoofed sources keeps each SYN for
// timeoutMemberConnect (5 s), so 200 SYNs a second pass it (docs/architecture.md, "SYN
// cookies").
const DefaultSynCookiesAbove = 1000

// Server serves models. Apply may be called at any time, from any goroutine.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	health  *health.Manager

	mu      sync.Mutex
	tcp     map[string]*tcpListener
	udp     map[string]*udpListener
	nat     kernelTable               // Options.NAT, or nil
	kernel  map[string]model.Listener // listeners the kernel carries
	refused map[string]model.Listener // by the kernel, as they were: the loops carry them
	pools   map[string]*pool
	members map[string]*member // by pool key, name and address
	closed  chan struct{}
	close   sync.Once
	open    atomic.Int64 // TCP connections open, of every listener, closed ones too

	congestion []byte // Options.MemberCongestion, if the kernel has it
}

// New returns a Server serving nothing.
func New(opts Options) *Server {
	var table kernelTable
	if opts.NAT != nil { // a nil *nat.Table would make a non-nil interface
		table = opts.NAT
	}
	return newServer(opts, table)
}

func newServer(opts Options, table kernelTable) *Server {
	s := &Server{
		opts: opts, log: opts.Logger, metrics: NewMetrics(opts.Registerer), nat: table,
		tcp: map[string]*tcpListener{}, udp: map[string]*udpListener{},
		kernel: map[string]model.Listener{}, refused: map[string]model.Listener{},
		pools: map[string]*pool{}, members: map[string]*member{}, closed: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if name := opts.MemberCongestion; name != "" {
		if err := congestionAvailable(name); err != nil {
			s.log.Warn("member connections keep the host's TCP congestion control", "asked", name, "err", err)
		} else {
			s.congestion = []byte(name)
			s.log.Info("member connections use their own TCP congestion control", "name", name)
		}
	}
	s.health = health.NewManager(s.onHealth)
	if table != nil {
		if opts.NAT != nil && opts.SynCookiesAbove > 0 && !opts.NAT.SynCookies() {
			s.log.Warn("the kernel has no SYN proxy (nft_synproxy): kernel-path listeners get no SYN cookies in a SYN flood")
		}
		go s.kernelStats()
		if opts.Registerer != nil {
			registerKernelTables(opts.Registerer, s.log)
		}
	}
	return s
}

func memberKey(pool string, m model.Member) string {
	return pool + "\x00" + m.Name + "\x00" + m.Address.String()
}

// Apply makes the server serve m: listeners are opened, changed in place or closed; pools and
// members are swapped atomically for new connections while open ones continue. It returns the
// listeners that could not be served, by key, with why (a port already in use, say).
func (s *Server) Apply(m model.Model) map[string]error {
	s.mu.Lock()
	defer s.mu.Unlock()

	// Members and pools first, so listeners point at current runtimes.
	members := map[string]*member{}
	pools := map[string]*pool{}
	var targets []health.Target
	for _, l := range m.Listeners {
		if l.Pool == nil {
			continue
		}
		p := l.Pool
		var runtime []*member
		for _, mm := range p.Members {
			k := memberKey(p.Key, mm)
			rm := s.members[k]
			if rm == nil || rm.spec != mm {
				old := rm
				rm = &member{pool: p.Key, spec: mm, metrics: s.metrics.member(p.Key, mm.Name, mm.Address.String())}
				if old != nil { // same member, new weight or flags: keep its state
					rm.up.Store(old.up.Load())
					rm.active.Store(old.active.Load())
					old.next.Store(rm)
				} else {
					rm.up.Store(true)
				}
			}
			if p.Monitor != nil {
				targets = append(targets, health.Target{Pool: p.Key, Member: mm.Name, Address: mm.MonitorAddress, Monitor: p.Monitor})
				rm.up.Store(s.health.Up(p.Key, mm.Name, mm.MonitorAddress))
			} else {
				rm.up.Store(true)
			}
			rm.metrics.up.Set(boolFloat(rm.up.Load()))
			members[k] = rm
			runtime = append(runtime, rm)
		}
		if prev := s.pools[p.Key]; prev != nil && slices.Equal(prev.members, runtime) && reflect.DeepEqual(prev.spec, *p) {
			// Unchanged: keep it whole, with its round robin's turn. The model is applied
			// whole, and a fresh selector on every change elsewhere would start each pool
			// at its first member again.
			pools[p.Key] = prev
			continue
		}
		pools[p.Key] = newPool(*p, runtime, s.pools[p.Key])
	}
	for k, old := range s.members {
		if _, kept := members[k]; !kept {
			s.metrics.forgetMember(old.pool, old.spec.Name, old.spec.Address.String())
		}
	}
	s.members, s.pools = members, pools
	s.health.Sync(targets)

	// A listener the kernel refused is tried there again once its settings change.
	listed := map[string]model.Listener{}
	for _, l := range m.Listeners {
		listed[l.Key] = l
	}
	maps.DeleteFunc(s.refused, func(key string, l model.Listener) bool { return !reflect.DeepEqual(listed[key], l) })

	failed := map[string]error{}
	want := map[string]bool{}
	kernel := map[string]model.Listener{}
	node := nat.ReadNode()
	for _, l := range m.Listeners {
		var err error
		switch {
		case s.byKernel(node, l):
			kernel[l.Key] = l
			continue
		case l.Protocol == model.TCP:
			want[l.Key] = true
			err = s.applyTCP(l, pools)
		case l.Protocol == model.UDP:
			want[l.Key] = true
			err = s.applyUDP(l, pools)
		default:
			err = fmt.Errorf("protocol %q", l.Protocol)
		}
		if err != nil {
			failed[l.Key] = err
			s.log.Error("cannot serve listener", "listener", l.Key, "address", l.Address, "err", err)
		}
	}
	for k, l := range s.tcp {
		if !want[k] {
			l.close() // its connections go on to their end
			delete(s.tcp, k)
			if _, moved := kernel[k]; !moved {
				s.metrics.forgetListener(k)
			}
		}
	}
	for k, l := range s.udp {
		if !want[k] {
			l.close()
			delete(s.udp, k)
			if _, moved := kernel[k]; !moved {
				s.metrics.forgetListener(k)
			}
		}
	}
	for k := range s.kernel {
		if _, kept := kernel[k]; !kept && !want[k] {
			s.metrics.forgetListener(k)
		}
	}
	s.kernel = kernel
	maps.Copy(failed, s.programKernel())
	for _, l := range m.Listeners {
		_, k := s.kernel[l.Key]
		s.metrics.inKernel.WithLabelValues(l.Key).Set(boolFloat(k))
	}
	return failed
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func poolFor(l model.Listener, pools map[string]*pool) *pool {
	if l.Pool == nil {
		return nil
	}
	return pools[l.Pool.Key]
}

func (s *Server) applyTCP(l model.Listener, pools map[string]*pool) error {
	cfg := &tcpConfig{spec: l, pool: poolFor(l, pools), congestion: s.congestion}
	if cur, ok := s.tcp[l.Key]; ok {
		if localAddr(cur.lns[0]) == l.Address {
			cur.cfg.Store(cfg)
			return nil
		}
		cur.close() // the address changed: open anew
		delete(s.tcp, l.Key)
	}
	// One accepting socket per core (SO_REUSEPORT): the kernel spreads new connections over
	// them, so accepting is not serialised behind one goroutine.
	tl := &tcpListener{key: l.Key, open: &s.open, metrics: s.metrics.listener(l.Key),
		log: func(msg string, kv ...any) { s.log.Warn(msg, kv...) }}
	for range max(1, runtime.GOMAXPROCS(0)) {
		ln, err := listenConfig().Listen(context.Background(), "tcp", l.Address.String())
		if err != nil {
			tl.close()
			return err
		}
		tl.lns = append(tl.lns, ln.(*net.TCPListener))
	}
	tl.cfg.Store(cfg)
	if err := tl.serve(); err != nil {
		tl.close()
		return err
	}
	s.tcp[l.Key] = tl
	return nil
}

// listenConfig binds with IP_FREEBIND, so a node can hold its listeners ready for a VIP it
// does not (yet) own: a takeover then only moves the address; and with SO_REUSEPORT, so a
// listener can have one socket per core.
func listenConfig() *net.ListenConfig {
	// No TCP keepalive probes on client sockets (HAProxy sends none by default either): the
	// idle timeouts close dead connections, and three setsockopt calls a connection are saved.
	return &net.ListenConfig{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			level, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
			if network == "tcp6" || network == "udp6" {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
			}
			if serr = unix.SetsockoptInt(int(fd), level, opt, 1); serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if serr == nil && network[:3] == "tcp" {
				// Accepted sockets inherit it: requests and responses go out without
				// waiting for Nagle's algorithm, and no system call per connection sets it.
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// onHealth applies a member's new health to its pool and tells the subscriber.
func (s *Server) onHealth(e health.Event) {
	s.mu.Lock()
	for _, m := range s.members {
		if m.pool == e.Pool && m.spec.Name == e.Member && m.spec.MonitorAddress == e.Address {
			m.up.Store(e.Up)
			m.metrics.up.Set(boolFloat(e.Up))
		}
	}
	if p := s.pools[e.Pool]; p != nil {
		p.rebuild()
		s.programKernel() // unchanged for the kernel unless it carries the pool
	}
	s.mu.Unlock()
	s.log.Info("member health changed", "pool", e.Pool, "member", e.Member, "up", e.Up, "reason", e.Reason)
	if s.opts.OnHealth != nil {
		s.opts.OnHealth(e)
	}
}

// MemberUp reports whether a member currently passes its monitor (true without one).
func (s *Server) MemberUp(pool string, name string, addr netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.members {
		if m.pool == pool && m.spec.Name == name && m.spec.Address == addr {
			return m.up.Load()
		}
	}
	return false
}

// Open is the number of TCP connections open now, those of closed listeners included.
func (s *Server) Open() int64 { return s.open.Load() }

// Close stops serving: listeners close, health checks stop; open connections finish.
func (s *Server) Close() {
	s.close.Do(func() {
		s.Apply(model.Model{})
		s.health.Close()
		close(s.closed)
	})
}
