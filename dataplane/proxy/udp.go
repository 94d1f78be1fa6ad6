package proxy

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/model"
)

// udpConfig is what a UDP listener serves with, swapped atomically like tcpConfig.
type udpConfig struct {
	spec model.Listener
	pool *pool
}

// udpListener relays datagrams per client session, in the loops like TCP: the first datagram
// from a client picks a member and opens a connected socket to it; replies go back through
// the listener's socket, so they come from the VIP; a session idle for timeoutClientData
// ends. Datagrams are read and written in batches (recvmmsg, sendmmsg), so a busy session
// costs a few system calls per batch, not one per datagram each way.
type udpListener struct {
	socks   []*udpSocket
	cfg     atomic.Pointer[udpConfig]
	active  atomic.Int64 // sessions, held against connectionLimit
	metrics *listenerMetrics
}

// udpSocket is one of a listener's sockets, one per loop (SO_REUSEPORT). The kernel hashes a
// client's address to one of them, so each session lives in one loop and the listener's
// datagrams are spread over every core.
type udpSocket struct {
	u        *udpListener
	conn     *net.UDPConn
	fd       int
	lp       *loop
	sessions map[netip.AddrPort]*udpSession // touched by the loop only
	drops    uint32                         // the kernel's drop count, as last added to the metrics
}

type udpSession struct {
	sock     *udpSocket
	client   netip.AddrPort
	name     unix.RawSockaddrAny // client, as sendmmsg wants it
	nameLen  uint32
	fd       int // connected to the member
	m        *member
	idle     int64
	seen     int64
	in, out  int64 // bytes not yet added to the metrics
	finished bool
}

func (s *Server) applyUDP(l model.Listener, pools map[string]*pool) error {
	cfg := &udpConfig{spec: l, pool: poolFor(l, pools)}
	if cur, ok := s.udp[l.Key]; ok {
		if cur.socks[0].conn.LocalAddr().(*net.UDPAddr).AddrPort() == l.Address {
			cur.cfg.Store(cfg)
			return nil
		}
		cur.close()
		delete(s.udp, l.Key)
	}
	u := &udpListener{metrics: s.metrics.listener(l.Key)}
	u.cfg.Store(cfg)
	for i := range max(1, runtime.GOMAXPROCS(0)) {
		if err := u.open(i, l.Address); err != nil {
			u.close()
			return err
		}
	}
	for _, us := range u.socks {
		us.lp.do(func(lp *loop) {
			lp.set(us.fd, us, unix.EPOLLIN)
			lp.at(us, time.Now().UnixNano()+countEvery)
		})
	}
	s.udp[l.Key] = u
	return nil
}

// listenerBuffer is the receive queue each UDP listener socket asks for. Clients arrive in
// bursts, many flows at once, and a datagram that finds the queue full is dropped before a
// loop sees it: with the kernel's default (208 KiB, about 270 small datagrams), 1000 flows
// lost more datagrams than came back. The agent holds NET_ADMIN, which lets it go past
// net.core.rmem_max; without it the kernel caps the request there.
const listenerBuffer = 4 << 20

// queueUp gives fd a receive queue of listenerBuffer.
func queueUp(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, listenerBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, listenerBuffer) // capped at rmem_max
	}
}

// open binds the listener's socket for loop i.
func (u *udpListener) open(i int, addr netip.AddrPort) error {
	lp, err := loopAt(i)
	if err != nil {
		return err
	}
	pc, err := listenConfig().ListenPacket(context.Background(), "udp", addr.String())
	if err != nil {
		return err
	}
	us := &udpSocket{u: u, conn: pc.(*net.UDPConn), lp: lp, sessions: map[netip.AddrPort]*udpSession{}}
	raw, err := us.conn.SyscallConn()
	if err != nil {
		pc.Close()
		return err
	}
	raw.Control(func(fd uintptr) {
		us.fd = int(fd)
		queueUp(us.fd)
	})
	u.socks = append(u.socks, us)
	return nil
}

// close ends the sessions; the sockets close only once their loops have let go of them, so
// a loop never touches a descriptor that was closed and reused.
func (u *udpListener) close() {
	var wg sync.WaitGroup
	for _, us := range u.socks {
		wg.Add(1)
		us.lp.do(func(lp *loop) {
			us.countDrops()
			delete(lp.timers, us)
			lp.set(us.fd, us, 0)
			lp.forget(us.fd, us)
			for _, s := range us.sessions {
				s.finish(lp)
			}
			wg.Done()
		})
	}
	wg.Wait()
	for _, us := range u.socks {
		us.conn.Close()
	}
}

// sessionCount asks the loops how many sessions are open.
func (u *udpListener) sessionCount() int {
	c := make(chan int, len(u.socks))
	for _, us := range u.socks {
		us.lp.do(func(*loop) { c <- len(us.sessions) })
	}
	n := 0
	for range u.socks {
		n += <-c
	}
	return n
}

// udpBatch is how many datagrams one recvmmsg or sendmmsg moves: under load one system call
// moves many, idle it costs nothing more.
const udpBatch = 32

// datagrams are a loop's batch buffers, each big enough for any datagram, and the headers
// that send them on.
type datagrams struct {
	hdrs  [udpBatch]unix.Mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrAny
	bufs  [udpBatch][]byte

	out   [udpBatch]unix.Mmsghdr
	cmsgs [udpBatch][3]uint64 // one UDP_SEGMENT control message each, 8-byte aligned
	sizes [udpBatch]int64     // bytes of each out
}

// gso is cleared the first time the kernel refuses UDP segmentation offload; sends are then
// one datagram per message.
var gso atomic.Bool

func init() { gso.Store(true) }

// maxSegments and maxGSO bound one segmented send (the kernel's limits are 64 segments and
// a 64 KiB datagram).
const (
	maxSegments = 64
	maxGSO      = 65000
)

// send writes the received datagrams lo..hi-1 to fd, addressed to name (nil when fd is
// connected), and returns the bytes that went out. A run of datagrams of one size (the last
// may be shorter) leaves as one segmented send (UDP GSO) that the kernel cuts into datagrams
// again as late as it can: one trip through the stack for the run rather than one per
// datagram.
func (d *datagrams) send(fd, lo, hi int, name *byte, nameLen uint32) int64 {
	useGSO := gso.Load()
	m := 0
	for k := lo; k < hi; m++ {
		size := d.hdrs[k].Len
		e, total := k+1, int64(size)
		for useGSO && size > 0 && e < hi && e-k < maxSegments && total+int64(d.hdrs[e].Len) <= maxGSO && d.hdrs[e].Len <= size {
			total += int64(d.hdrs[e].Len)
			e++
			if d.hdrs[e-1].Len < size {
				break // a shorter one ends the run
			}
		}
		for x := k; x < e; x++ {
			d.iovs[x].Len = uint64(d.hdrs[x].Len)
		}
		d.out[m] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: name, Namelen: nameLen, Iov: &d.iovs[k], Iovlen: uint64(e - k)}}
		if e-k > 1 {
			c := (*unix.Cmsghdr)(unsafe.Pointer(&d.cmsgs[m][0]))
			c.Level, c.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			c.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Add(unsafe.Pointer(&d.cmsgs[m][0]), unix.CmsgLen(0))) = uint16(size)
			d.out[m].Hdr.Control = (*byte)(unsafe.Pointer(&d.cmsgs[m][0]))
			d.out[m].Hdr.SetControllen(unix.CmsgSpace(2))
		}
		d.sizes[m] = total
		k = e
	}
	sent, err := sendmmsgNow(fd, d.out[:m])
	if useGSO && sent == 0 && (err == unix.EIO || err == unix.EINVAL || err == unix.EOPNOTSUPP) {
		gso.Store(false) // this kernel or path cannot segment: send plainly from now on
		return d.send(fd, lo, hi, name, nameLen)
	}
	var bytes int64
	for _, b := range d.sizes[:sent] {
		bytes += b
	}
	return bytes
}

func newDatagrams() *datagrams {
	d := &datagrams{}
	for i := range d.bufs {
		d.bufs[i] = make([]byte, 64<<10) // pages are only backed once written to
	}
	return d
}

// prepare readies the headers to receive up to udpBatch datagrams (and their sources).
func (d *datagrams) prepare() {
	for i := range d.hdrs {
		d.iovs[i] = unix.Iovec{Base: &d.bufs[i][0], Len: uint64(len(d.bufs[i]))}
		d.hdrs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{
			Name: (*byte)(unsafe.Pointer(&d.names[i])), Namelen: unix.SizeofSockaddrAny,
			Iov: &d.iovs[i], Iovlen: 1,
		}}
	}
}

func recvmmsgNow(fd int, h []unix.Mmsghdr) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&h[0])), uintptr(len(h)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sendmmsgNow(fd int, h []unix.Mmsghdr) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&h[0])), uintptr(len(h)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// expire brings the listener's dropped-datagrams metric up to date, every countEvery.
func (us *udpSocket) expire(_ *loop, now int64) int64 {
	us.countDrops()
	return now + countEvery
}

func (us *udpSocket) countDrops() {
	if d := socketDropsNow(us.fd); d != us.drops {
		us.u.metrics.dropped.Add(float64(d - us.drops)) // uint32 arithmetic: wraps as the kernel's count does
		us.drops = d
	}
}

// ready relays what clients sent to the listener to their sessions' members.
func (us *udpSocket) ready(lp *loop, _ int, _ uint32) {
	d := lp.datagrams()
	d.prepare()
	n, _ := recvmmsgNow(us.fd, d.hdrs[:])
	now := time.Now().UnixNano()
	var in int64
	// A client's datagrams usually arrive one after another: each run of them goes to its
	// member at once.
	for i := 0; i < n; {
		client := rawAddrPort(&d.names[i])
		j := i + 1
		for j < n && rawAddrPort(&d.names[j]) == client {
			j++
		}
		if s := us.session(lp, client, now); s != nil {
			s.seen = now
			b := d.send(s.fd, i, j, nil, 0) // the member's socket is connected
			in += b
			s.in += b
		}
		i = j
	}
	us.u.metrics.bytesIn.Add(float64(in))
}

// session finds or opens the client's session; nil when the client is refused.
func (us *udpSocket) session(lp *loop, client netip.AddrPort, now int64) *udpSession {
	if s := us.sessions[client]; s != nil {
		if m := s.m.current(); m.up.Load() && m.spec.AdminStateUp {
			return s
		}
		// Its member failed its health monitor or was disabled. A datagram flow holds no
		// connection on the member to keep, so the client moves to a member that is up
		// (LVS does the same with expire_nodest_conn). A member that drains (weight 0, or
		// removed) keeps its sessions until they idle out.
		s.finish(lp)
	}
	u := us.u
	cfg := u.cfg.Load()
	if cfg.pool == nil || !cfg.spec.Allowed(client.Addr()) {
		u.metrics.errors.Inc()
		return nil
	}
	// The session's place under connectionLimit is taken first, so the loops, which open
	// sessions side by side, never go over it together.
	if u.active.Add(1) > int64(cfg.spec.ConnectionLimit) {
		u.active.Add(-1)
		u.metrics.errors.Inc()
		return nil
	}
	fd, m := -1, cfg.pool.pick(client, nil)
	if m != nil {
		var err error
		if fd, err = socketNow(unix.SOCK_DGRAM, m.spec.Address, nil); err != nil {
			m.metrics.errors.Inc()
		}
	}
	s := &udpSession{sock: us, client: client, fd: fd, m: m, seen: now, idle: int64(cfg.spec.TimeoutClientData)}
	if fd < 0 || lp.set(fd, s, unix.EPOLLIN) != nil {
		if fd >= 0 {
			closeNow(fd)
		}
		u.active.Add(-1)
		u.metrics.errors.Inc()
		return nil
	}
	if s.idle <= 0 {
		s.idle = int64(50 * time.Second)
	}
	s.nameLen = rawSockaddr(client, &s.name)
	us.sessions[client] = s
	lp.at(s, now+s.idle)
	m.active.Add(1)
	m.metrics.total.Inc()
	m.metrics.active.Inc()
	u.metrics.total.Inc()
	u.metrics.active.Inc()
	return s
}

// ready relays the member's answers to the client, from the listener's address.
func (s *udpSession) ready(lp *loop, _ int, _ uint32) {
	d := lp.datagrams()
	d.prepare()
	n, err := recvmmsgNow(s.fd, d.hdrs[:])
	if err == unix.ECONNREFUSED {
		// ICMP port unreachable: nothing listens there. The session ends, so the client's
		// next datagram opens one on another member instead of vanishing until the idle
		// timeout.
		s.m.metrics.errors.Inc()
		s.finish(lp)
		return
	}
	if err != nil || n == 0 {
		return
	}
	out := d.send(s.sock.fd, 0, n, (*byte)(unsafe.Pointer(&s.name)), s.nameLen)
	s.seen = time.Now().UnixNano()
	s.out += out
	s.sock.u.metrics.bytesOut.Add(float64(out))
}

func (s *udpSession) expire(lp *loop, now int64) int64 {
	if s.finished {
		return 0
	}
	// Metrics are shared between cores: add to them now and then, not per datagram.
	s.m.metrics.bytesIn.Add(float64(s.in))
	s.m.metrics.bytesOut.Add(float64(s.out))
	s.in, s.out = 0, 0
	if now < s.seen+s.idle {
		return min(s.seen+s.idle, now+int64(time.Second))
	}
	s.finish(lp)
	return 0
}

func (s *udpSession) finish(lp *loop) {
	if s.finished {
		return
	}
	s.finished = true
	lp.forget(s.fd, s)
	closeNow(s.fd)
	delete(lp.timers, s)
	if s.sock.sessions[s.client] == s {
		delete(s.sock.sessions, s.client)
	}
	s.sock.u.active.Add(-1)
	s.m.active.Add(-1)
	s.m.metrics.active.Dec()
	s.m.metrics.bytesIn.Add(float64(s.in))
	s.m.metrics.bytesOut.Add(float64(s.out))
	s.sock.u.metrics.active.Dec()
}
