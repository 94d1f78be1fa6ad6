package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/model"
)

// tcpConfig is what a TCP listener serves with; it is swapped atomically on reconfiguration
// and each connection keeps the one it started with.
type tcpConfig struct {
	spec       model.Listener
	pool       *pool  // nil: refuse
	congestion []byte // of connections to members; nil: the host's default
}

type tcpListener struct {
	key       string
	lns       []*net.TCPListener // one per core, bound with SO_REUSEPORT
	acceptors []*acceptor
	cfg       atomic.Pointer[tcpConfig]
	active    atomic.Int64
	open      *atomic.Int64 // the server's count of open connections, all listeners
	metrics   *listenerMetrics
	log       func(msg string, kv ...any)
}

// serve makes every loop accept on every listening socket. The kernel hashes each new
// connection to one socket, whose home loop always accepts it; the other loops take it
// too unless they hold more connections, so a busy or descheduled loop does not keep new
// connections waiting and long ones end up spread evenly (HAProxy's threads share their
// listener and hand connections to the least loaded one). The loser of a race gets
// EAGAIN, one cheap system call.
func (l *tcpListener) serve() error {
	for k, ln := range l.lns {
		raw, err := ln.SyscallConn()
		if err != nil {
			return err
		}
		var fd int
		raw.Control(func(s uintptr) { fd = int(s) })
		home, err := loopAt(k)
		if err != nil {
			return err
		}
		for i := range l.lns {
			lp, err := loopAt(k + i)
			if err != nil {
				return err
			}
			a := &acceptor{l: l, lp: lp, home: home, fd: fd}
			l.acceptors = append(l.acceptors, a)
			lp.do(a.start)
		}
	}
	return nil
}

// close stops accepting; open connections go on. The sockets close only once every loop has
// let go of them, so a loop never touches a descriptor that was closed and reused.
func (l *tcpListener) close() {
	var wg sync.WaitGroup
	for _, a := range l.acceptors {
		wg.Add(1)
		a.lp.do(func(lp *loop) { a.stop(lp); wg.Done() })
	}
	wg.Wait()
	for _, ln := range l.lns {
		ln.Close()
	}
}

// acceptor accepts a listening socket's connections in a loop. The socket belongs to Go's
// net package, which closes it only after stop.
type acceptor struct {
	l       *tcpListener
	lp      *loop
	home    *loop // the loop that owns the socket; lp helps it when lp != home
	fd      int
	resume  int64 // when accepting starts again after running out of descriptors
	stopped bool
}

func (a *acceptor) start(lp *loop) {
	if a.stopped {
		return
	}
	mask := uint32(unix.EPOLLIN)
	if lp != a.home {
		// Told once per new connection (edge-triggered): a helper that leaves the
		// connections to the home loop is not woken for them again and again.
		mask |= unix.EPOLLET
	}
	lp.set(a.fd, a, mask)
}

func (a *acceptor) stop(lp *loop) {
	a.stopped = true
	lp.set(a.fd, a, 0)
	lp.forget(a.fd, a)
}

// acceptBurst bounds the connections taken from one socket per event, so one flooded
// listener cannot starve the others of a loop, and a burst is shared between the loops.
const acceptBurst = 4

func (a *acceptor) ready(lp *loop, _ int, _ uint32) {
	if lp != a.home && lp.conns.Load() > a.home.conns.Load() {
		return // the home loop is less busy: it takes them
	}
	for range acceptBurst {
		fd, src, aerr := acceptNow(a.fd)
		switch aerr {
		case nil:
			a.l.admit(lp, fd, src)
			continue
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		}
		// Out of descriptors or memory: stop accepting for a moment instead of spinning.
		a.l.log("accept failed", "listener", a.l.key, "err", aerr)
		lp.set(a.fd, a, 0)
		a.resume = time.Now().UnixNano() + int64(100*time.Millisecond)
		lp.at(a, a.resume)
		return
	}
}

func (a *acceptor) expire(lp *loop, now int64) int64 {
	if a.resume == 0 {
		return 0
	}
	if now < a.resume {
		return a.resume
	}
	a.resume = 0
	a.start(lp)
	return 0
}

// admit applies the listener's admission rules to a new client and starts its connection.
func (l *tcpListener) admit(lp *loop, fd int, src netip.AddrPort) {
	cfg := l.cfg.Load()
	if !cfg.spec.Allowed(src.Addr()) || cfg.pool == nil {
		l.metrics.errors.Inc()
		resetNow(fd)
		return
	}
	if l.active.Add(1) > int64(cfg.spec.ConnectionLimit) {
		l.active.Add(-1)
		l.metrics.errors.Inc()
		resetNow(fd)
		return
	}
	l.open.Add(1)
	c := lp.newConn()
	c.l, c.cfg, c.src, c.fds = l, cfg, src, [2]int{fd, -1}
	// Clients usually send at once: read now (as HAProxy does), so the first bytes can go
	// out with the connect instead of waiting for another turn of the loop.
	n, err := readNow(fd, lp.buf)
	switch {
	case n > 0:
		c.early = append(c.spare[:0], lp.buf[:n]...)
		if cap(c.early) <= maxSpare {
			c.spare = c.early[:0]
		}
		c.connect(lp)
		return
	case err == nil: // gone before saying anything
		c.drop(lp, false)
		return
	case err != unix.EAGAIN:
		c.drop(lp, true)
		return
	}
	if d := cfg.spec.TimeoutTCPInspect; d > 0 {
		// timeoutTCPInspect: give the client this long to send its first bytes before
		// choosing a member, so they go out in the first segment to the member.
		c.state = inspecting
		c.deadline = time.Now().UnixNano() + int64(d)
		lp.set(fd, c, unix.EPOLLIN)
		lp.at(c, c.deadline)
		return
	}
	c.connect(lp)
}

type connState uint8

const (
	closed connState = iota // also what a new or reused tcpConn starts as
	inspecting
	connecting
	open
)

// tcpConn is one proxied connection, driven by its loop: fds are the client's and the
// member's sockets, and flows[i] copies from fds[i] to the other.
type tcpConn struct {
	l        *tcpListener
	cfg      *tcpConfig
	m        *member
	src      netip.AddrPort
	fds      [2]int
	state    connState
	deadline int64     // of inspecting or connecting, unix nanoseconds
	unsent   [2]int    // bytes the kernel held unsent for each peer at the last idle check
	tried    []*member // members whose connect failed
	early    []byte    // PROXY header and inspected bytes, sent to the member first
	spare    []byte    // holds early; kept when the struct is reused, so accepting allocates nothing
	sent     int64     // bytes of early
	flows    [2]flow
	seen     int64    // last data either way, unix nanoseconds
	reset    bool     // close the client with a reset
	counted  [2]int64 // bytes in and out already added to the metrics
	dirty    bool     // bytes moved that the metrics do not have yet
}

// flow is one direction. Its source is read only while nothing waits to be written, so a
// slow receiver slows the sender down (TCP's own flow control, end to end).
type flow struct {
	pending []byte // read but not yet written (small-message path)
	pipe    *pipe  // spliced but not yet written (bulk path)
	bulk    bool
	eof     bool // the source ended; the destination is shut down once flushed
	done    bool
	bytes   int64
}

func (f *flow) waiting() bool { return len(f.pending) > 0 || (f.pipe != nil && f.pipe.n > 0) }
func (f *flow) reading() bool { return !f.eof && !f.waiting() }

// more is the send flags of the flow's writes: once its source ended, the destination is
// shut down right after the last write, and MSG_MORE lets the FIN ride with those bytes.
func (f *flow) more() int {
	if f.eof {
		return unix.MSG_MORE | unix.MSG_NOSIGNAL
	}
	return unix.MSG_NOSIGNAL
}

// connect opens a socket to the next member and waits for it in the loop; a failed member
// is skipped for another one until the connect timeout.
//
// With bytes to send (the client's first ones, a PROXY header), it writes them at once: on a
// fast network the connect has completed by then, and the connection is established
// without waiting for the loop to report the socket writable.
func (c *tcpConn) connect(lp *loop) {
	now := time.Now().UnixNano()
	if c.state != connecting {
		c.state = connecting
		c.deadline = now + int64(c.cfg.spec.TimeoutMemberConnect)
		if h := proxyHeader(c.cfg.pool.spec.Protocol, c.src, c.local()); h != nil {
			c.early = append(h, c.early...)
		}
		c.sent = int64(len(c.early))
	}
	for {
		m := c.cfg.pool.pick(c.src, c.tried)
		if m == nil || (len(c.tried) > 0 && now >= c.deadline) {
			c.refuse(lp)
			return
		}
		m.active.Add(1)
		fd, err := socketNow(unix.SOCK_STREAM, m.spec.Address, c.cfg.congestion)
		if err == nil && len(c.early) > 0 {
			var w int
			if w, err = writeNow(fd, c.early); err == nil {
				c.m, c.fds[1] = m, fd
				c.early = c.early[w:]
				c.establish(lp)
				return
			}
			if err != unix.EAGAIN { // refused
				closeNow(fd)
			}
		}
		if err == nil || err == unix.EAGAIN { // connecting: wait until writable
			c.m, c.fds[1] = m, fd
			lp.set(fd, c, unix.EPOLLOUT)
			lp.at(c, c.deadline)
			return
		}
		c.memberFailed(m)
		now = time.Now().UnixNano()
	}
}

func (c *tcpConn) memberFailed(m *member) {
	m.active.Add(-1)
	m.metrics.errors.Inc()
	c.tried = append(c.tried, m)
}

// refuse resets the client: no member could be reached.
func (c *tcpConn) refuse(lp *loop) {
	c.l.metrics.errors.Inc()
	c.drop(lp, true)
}

// drop ends a connection that never reached a member: the client's socket closes (with a
// reset when asked) and c goes back to its loop.
func (c *tcpConn) drop(lp *loop, reset bool) {
	c.l.active.Add(-1)
	c.l.open.Add(-1)
	lp.forget(c.fds[0], c)
	if reset {
		resetNow(c.fds[0])
	} else {
		closeNow(c.fds[0])
	}
	c.state = closed
	delete(lp.timers, c)
	lp.freeConn(c)
}

func (c *tcpConn) ready(lp *loop, fd int, events uint32) {
	switch c.state {
	case inspecting:
		c.inspect(lp)
	case connecting:
		c.connected(lp)
	case open:
		c.transfer(lp, fd, events)
	}
}

// inspect takes the client's first bytes.
func (c *tcpConn) inspect(lp *loop) {
	buf := make([]byte, 4096)
	n, err := readNow(c.fds[0], buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil || n == 0: // gone before saying anything
		c.drop(lp, false)
		return
	}
	c.early = buf[:n]
	lp.set(c.fds[0], c, 0)
	c.connect(lp)
}

// connected finishes a connect, or tries the next member.
func (c *tcpConn) connected(lp *loop) {
	if socketErrorNow(c.fds[1]) == nil {
		c.establish(lp)
		return
	}
	lp.forget(c.fds[1], c)
	closeNow(c.fds[1])
	c.fds[1] = -1
	c.memberFailed(c.m)
	c.m = nil
	c.connect(lp)
}

func (c *tcpConn) establish(lp *loop) {
	c.state = open
	c.deadline = 0
	c.seen = time.Now().UnixNano()
	c.l.metrics.total.Inc()
	c.l.metrics.active.Inc()
	c.m.metrics.total.Inc()
	c.m.metrics.active.Inc()
	if len(c.early) > 0 {
		c.flows[0].pending = c.early
		c.early = nil
		if !c.flush(lp, 0) {
			return
		}
	}
	c.watch(lp)
	if idle := c.idle(); idle > 0 {
		lp.at(c, c.seen+idle)
	}
}

// local is the address the client connected to.
func (c *tcpConn) local() netip.AddrPort {
	if a := c.cfg.spec.Address; !a.Addr().IsUnspecified() {
		return a
	}
	sa, err := unix.Getsockname(c.fds[0])
	if err != nil {
		return c.cfg.spec.Address
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return c.cfg.spec.Address
}

// watch asks the loop for what the flows wait on: a source to read, a destination to drain.
func (c *tcpConn) watch(lp *loop) {
	for i := range c.fds {
		var mask uint32
		if c.flows[i].reading() {
			mask |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if c.flows[1-i].waiting() {
			mask |= unix.EPOLLOUT
		}
		if err := lp.set(c.fds[i], c, mask); err != nil {
			c.abort(lp)
			return
		}
	}
}

// transfer moves data for a ready socket: what waits to be written to it, then what it
// has to read.
func (c *tcpConn) transfer(lp *loop, fd int, events uint32) {
	i := 0
	if fd == c.fds[1] {
		i = 1
	}
	if events&unix.EPOLLERR != 0 {
		c.abort(lp)
		return
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP) != 0 && c.flows[1-i].waiting() {
		if !c.flush(lp, 1-i) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLHUP) != 0 && c.flows[i].reading() {
		if !c.read(lp, i, events&unix.EPOLLRDHUP != 0) {
			return
		}
	}
	if c.flows[0].done && c.flows[1].done {
		c.finish(lp)
		return
	}
	c.watch(lp)
}

// read takes what flow i's source has and passes it on; false if the connection ended.
// ended says the source has sent its FIN, so everything it sent is already queued.
func (c *tcpConn) read(lp *loop, i int, ended bool) bool {
	f := &c.flows[i]
	var (
		n   int
		err error
	)
	if f.bulk {
		if f.pipe == nil {
			if f.pipe, err = lp.getPipe(); err != nil {
				c.abort(lp)
				return false
			}
		}
		n, err = spliceNow(c.fds[i], f.pipe.w, pipeSize)
		f.pipe.n += n
	} else {
		n, err = readNow(c.fds[i], lp.buf)
	}
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true
	case err != nil:
		c.abort(lp)
		return false
	case n == 0:
		f.eof = true
	default:
		f.bytes += int64(n)
		c.seen = lp.now // the batch's clock: idle timeouts need no finer one
		if !c.dirty {
			c.dirty = true
			lp.count(c, c.seen)
		}
	}
	if !f.bulk && n > 0 {
		// A short read from a source that sent its FIN took everything: the end is known
		// without another read, and the last bytes wait for the FIN to leave with them
		// (one segment and one acknowledgement fewer, as HAProxy sends a closing reply).
		f.eof = ended && n < len(lp.buf)
		lp.relayed = true
		w, err := sendNow(c.fds[1-i], lp.buf[:n], f.more())
		if err != nil && err != unix.EAGAIN {
			c.abort(lp)
			return false
		}
		if w < n {
			f.pending = append([]byte(nil), lp.buf[w:n]...)
		}
		f.bulk = n == len(lp.buf) // a full buffer: more is coming, splice it
		return c.flush(lp, i)
	}
	ok := c.flush(lp, i)
	if ok && f.bulk && n > 0 && n < chunk && !f.waiting() {
		f.bulk = false // a short read, all written: back to small messages
	}
	return ok
}

// flush writes what flow i holds to its destination and, once it holds nothing after its
// source ended, shuts the destination down for writing; false if the connection ended.
func (c *tcpConn) flush(lp *loop, i int) bool {
	f := &c.flows[i]
	dst := c.fds[1-i]
	switch {
	case f.pipe != nil && f.pipe.n > 0:
		n, err := spliceNow(f.pipe.r, dst, f.pipe.n)
		if err != nil && err != unix.EAGAIN {
			c.abort(lp)
			return false
		}
		f.pipe.n -= n
		c.wrote(lp, n)
	case len(f.pending) > 0:
		n, err := sendNow(dst, f.pending, f.more())
		if err != nil && err != unix.EAGAIN {
			c.abort(lp)
			return false
		}
		c.wrote(lp, n)
		f.pending = f.pending[n:]
		if len(f.pending) == 0 {
			f.pending = nil
		}
	}
	if f.pipe != nil && f.pipe.n == 0 {
		lp.putPipe(f.pipe) // an idle connection holds no pipe
		f.pipe = nil
	}
	if f.eof && !f.waiting() && !f.done {
		f.done = true
		if !c.flows[1-i].done { // else both close at once, which sends the FIN
			shutdownNow(dst, unix.SHUT_WR) // pass the half-close on; the other flow goes on
		}
	}
	return true
}

// idle is the shortest idle timeout of the flows still running (0: none).
func (c *tcpConn) idle() int64 {
	var idle int64
	for i, d := range [2]time.Duration{c.cfg.spec.TimeoutClientData, c.cfg.spec.TimeoutMemberData} {
		if d > 0 && !c.flows[i].done && (idle == 0 || int64(d) < idle) {
			idle = int64(d)
		}
	}
	return idle
}

// unsentMoved reports whether what the kernel holds unsent for either peer changed since the
// last look: a transfer draining from the socket buffers to a slow reader (they hold
// megabytes) moves nothing through the proxy, yet is not idle.
func (c *tcpConn) unsentMoved() bool {
	moved := false
	for i, fd := range c.fds {
		q, err := unix.IoctlGetInt(fd, unix.TIOCOUTQ)
		if err != nil {
			continue
		}
		if q > 0 && q != c.unsent[i] {
			moved = true
		}
		c.unsent[i] = q
	}
	return moved
}

// wrote counts bytes that left towards a peer as activity: a transfer still draining to a
// slow reader is not idle, though its source has sent everything.
func (c *tcpConn) wrote(lp *loop, n int) {
	if n > 0 {
		c.seen = lp.now
	}
}

// expire handles a passed deadline: inspection over, connect timed out, or idle too long.
// A flow whose source is quiet for its idle timeout ends the connection only if the other
// flow has been quiet as long (both share seen).
func (c *tcpConn) expire(lp *loop, now int64) int64 {
	switch c.state {
	case inspecting:
		if now < c.deadline {
			return c.deadline
		}
		lp.set(c.fds[0], c, 0)
		c.connect(lp)
	case connecting:
		if now < c.deadline {
			return c.deadline
		}
		lp.forget(c.fds[1], c)
		closeNow(c.fds[1])
		c.fds[1] = -1
		c.memberFailed(c.m)
		c.refuse(lp)
		return 0
	case open:
		idle := c.idle()
		if idle == 0 {
			return 0
		}
		if now >= c.seen+idle && c.unsentMoved() {
			c.seen = now // a peer is still taking what the kernel holds for it
		}
		if now < c.seen+idle {
			return c.seen + idle
		}
		c.abort(lp)
		return 0
	}
	if c.state == closed { // refused, and c may already be reused
		return 0
	}
	return c.deadline
}

// abort ends the connection at once, resetting the client.
func (c *tcpConn) abort(lp *loop) {
	c.reset = true
	c.finish(lp)
}

// finish closes both sockets and accounts for the connection.
func (c *tcpConn) finish(lp *loop) {
	if c.state == closed {
		return
	}
	c.state = closed
	delete(lp.timers, c)
	for i, fd := range c.fds {
		lp.forget(fd, c)
		if i == 0 && c.reset {
			resetNow(fd)
		} else {
			closeNow(fd)
		}
		if p := c.flows[i].pipe; p != nil {
			lp.putPipe(p)
		}
	}
	c.countBytes()
	c.l.active.Add(-1)
	c.l.open.Add(-1)
	c.l.metrics.active.Dec()
	c.m.active.Add(-1)
	c.m.metrics.active.Dec()
	lp.freeConn(c)
}

// countBytes adds what went through since it was last called to the listener's and member's
// counters. The loop calls it about once a second for connections that moved data, so the
// counters follow long connections, and once at the end.
func (c *tcpConn) countBytes() {
	in, out := c.sent+c.flows[0].bytes, c.flows[1].bytes
	if d := float64(in - c.counted[0]); d > 0 {
		c.l.metrics.bytesIn.Add(d)
		c.m.metrics.bytesIn.Add(d)
	}
	if d := float64(out - c.counted[1]); d > 0 {
		c.l.metrics.bytesOut.Add(d)
		c.m.metrics.bytesOut.Add(d)
	}
	c.counted = [2]int64{in, out}
	c.dirty = false
}

// localAddr of a listener, as a netip value.
func localAddr(ln net.Listener) netip.AddrPort {
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
