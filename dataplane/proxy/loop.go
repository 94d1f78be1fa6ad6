package proxy

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loop is an event loop that carries TCP connections from accept to close the way HAProxy's
// threads do: one goroutine per core waits on its own epoll set (level-triggered) and, for
// each ready socket, accepts, connects, reads and writes without blocking. A connection so
// costs two sockets and a small struct, never a goroutine, and a request crosses the proxy
// without a goroutine switch. Bulk data is spliced through a pipe in the kernel.
//
// The sockets of connections are raw descriptors that Go's poller never sees, so a packet
// wakes one poller, not two. The epoll descriptor itself is registered in Go's poller (as an
// *os.File), so a loop with nothing to do parks its goroutine like any blocked read instead
// of holding a thread in epoll_wait. Only right after it relayed a request or a reply does a
// loop wait in epoll_wait itself, for at most replyWait (see run). Everything a loop owns is
// touched by its goroutine only; other goroutines hand it work through do.
type loop struct {
	ep   int
	wake int // an eventfd that tells the loop its inbox has work
	file *os.File

	handlers []watch // by descriptor: a slice, as descriptors are small numbers
	gen      uint32  // tells a registration from an earlier one of the same descriptor
	now      int64   // when the current batch of events was taken (unix nanoseconds)
	timers   map[timer]struct{}
	due      int64 // when the earliest timer falls due (unix nanoseconds); 0: none
	armed    int64 // the deadline set on file
	buf      []byte
	pipes    []*pipe // empty pipes kept for reuse
	dgrams   *datagrams
	free     []*tcpConn   // ended connections, reused so connections allocate (and collect) nothing
	dirty    []*tcpConn   // connections whose bytes the metrics do not have yet
	conns    atomic.Int64 // TCP connections the loop holds; other loops' acceptors read it
	relayed  bool         // a request or reply went through since the loop last waited

	mu    sync.Mutex
	inbox []func(*loop)
}

// handler is what a loop calls when a descriptor it watches is ready.
type handler interface {
	ready(lp *loop, fd int, events uint32)
}

// timer is what a loop calls when its deadline passed; it returns its next deadline
// (0: none, and it is forgotten).
type timer interface {
	expire(lp *loop, now int64) int64
}

type watch struct {
	h    handler
	gen  uint32
	mask uint32
}

// yieldEvery is how long a busy loop runs before it lets the scheduler run others, under
// the runtime's 10 ms preemption limit.
const yieldEvery = int64(5 * time.Millisecond)

// replyWait is how long (in milliseconds, epoll_wait's unit) a loop that just relayed a
// request or a reply waits in the kernel for the answer before it parks its goroutine.
// Parking and waking through Go's poller costs a second epoll_wait and a scheduler round
// per wake-up, which left the machine idler than HAProxy under request/response load
// (docs/benchmarks.md, "Design choices measured").
// The loop keeps its processor while it waits, no longer than a busy loop would: the
// runtime's signals (preemption, stopping the world) end the wait at once with EINTR, work
// from other goroutines arrives through the wake eventfd, and the wait is short. Bulk
// (spliced) traffic does not wait: there, parking is faster (same section).
const replyWait = 1

// minSweep bounds how often timers are checked: deadlines fire at most this late.
const minSweep = int64(10 * time.Millisecond)

// maxSpare bounds the first-bytes buffer a reused connection keeps.
const maxSpare = 2 << 10

// chunk is the read size of the small-message path; a read that fills it means bulk data,
// which is then spliced.
const chunk = 32 << 10

var (
	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
)

// loopAt returns loop i modulo their number. The loops live as long as the process:
// connections outlive the listeners and servers that accepted them.
func loopAt(i int) (*loop, error) {
	loopsOnce.Do(func() {
		for range max(1, runtime.GOMAXPROCS(0)) {
			lp, err := newLoop()
			if err != nil {
				loopsErr = err
				return
			}
			loops = append(loops, lp)
			go lp.run()
		}
	})
	if loopsErr != nil {
		return nil, loopsErr
	}
	return loops[i%len(loops)], nil
}

func newLoop() (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err == nil {
		err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)})
	}
	if err == nil {
		err = unix.SetNonblock(ep, true) // what makes os.NewFile register it in Go's poller
	}
	if err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &loop{
		ep: ep, wake: wake, file: os.NewFile(uintptr(ep), "l4lb-loop"),
		timers: map[timer]struct{}{}, buf: make([]byte, chunk),
	}, nil
}

// do runs f on the loop's goroutine; any goroutine may call it.
func (lp *loop) do(f func(*loop)) {
	lp.mu.Lock()
	lp.inbox = append(lp.inbox, f)
	lp.mu.Unlock()
	one := [8]byte{1}
	unix.Write(lp.wake, one[:])
}

// set makes the loop watch fd for mask on behalf of h: it registers, changes or (mask 0)
// unregisters it, so a socket nobody waits on cannot report a hang-up over and over.
func (lp *loop) set(fd int, h handler, mask uint32) error {
	if fd >= len(lp.handlers) {
		lp.handlers = append(lp.handlers, make([]watch, fd+1-len(lp.handlers)+len(lp.handlers)/2)...)
	}
	w := &lp.handlers[fd]
	ok := w.h == h // else nothing, or a stale entry: that descriptor was closed and reused
	switch {
	case ok && w.mask == mask:
		return nil
	case mask == 0:
		if ok {
			*w = watch{}
			return epollCtlNow(lp.ep, unix.EPOLL_CTL_DEL, fd, nil)
		}
		return nil
	case ok:
		w.mask = mask
		return epollCtlNow(lp.ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: mask, Fd: int32(fd), Pad: int32(w.gen)})
	}
	lp.gen++
	*w = watch{h: h, gen: lp.gen, mask: mask}
	return epollCtlNow(lp.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: mask, Fd: int32(fd), Pad: int32(lp.gen)})
}

// forget drops fd before it is closed (closing removes it from the epoll set).
func (lp *loop) forget(fd int, h handler) {
	if fd >= 0 && fd < len(lp.handlers) && lp.handlers[fd].h == h {
		lp.handlers[fd] = watch{}
	}
}

// at makes the loop call t's expire at `when` (unix nanoseconds) at the latest.
func (lp *loop) at(t timer, when int64) {
	lp.timers[t] = struct{}{}
	if lp.due == 0 || when < lp.due {
		lp.due = when
	}
}

func (lp *loop) run() {
	raw, err := lp.file.SyscallConn()
	if err != nil {
		panic(err) // an *os.File always has one
	}
	events := make([]unix.EpollEvent, 256)
	yielded := time.Now().UnixNano()
	for {
		err := raw.Read(func(uintptr) bool {
			for {
				now := time.Now().UnixNano()
				lp.now = now
				if lp.due != 0 && now >= lp.due {
					lp.sweep() // due timers run even under constant load
				}
				if now-yielded > yieldEvery {
					// A goroutine that runs for 10 ms is preempted by a signal, and the
					// runtime's monitor then keeps waking every 20 µs for a while: both
					// steal the cores the connections need. Yielding first costs nothing.
					runtime.Gosched()
					yielded = now
				}
				n, err := epollNow(lp.ep, events)
				if n == 0 && err == nil && lp.relayed {
					n, err = epollWaitNow(lp.ep, events, replyWait)
				}
				lp.relayed = false
				if err == unix.EINTR {
					continue
				}
				if n <= 0 {
					lp.arm()
					return false // drained: park until the epoll set has something again
				}
				for _, ev := range events[:n] {
					if ev.Fd == int32(lp.wake) {
						lp.takeInbox()
						continue
					}
					if w := lp.handlers[ev.Fd]; w.h != nil && w.gen == uint32(ev.Pad) {
						w.h.ready(lp, int(ev.Fd), ev.Events)
					}
				}
			}
		})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			panic(err) // the loop's own descriptor is never closed
		}
		// A passed deadline fails every later read until it is cleared; the sweep at the
		// top of the loop sets the next one when the loop parks again.
		lp.armed = 0
		lp.file.SetReadDeadline(time.Time{})
	}
}

// arm sets the file's read deadline to the earliest timer, so a parked loop wakes for it.
func (lp *loop) arm() {
	if lp.due == lp.armed {
		return
	}
	lp.armed = lp.due
	if lp.due == 0 {
		lp.file.SetReadDeadline(time.Time{})
	} else {
		lp.file.SetReadDeadline(time.Unix(0, lp.due))
	}
}

func (lp *loop) takeInbox() {
	var b [8]byte
	unix.Read(lp.wake, b[:])
	lp.mu.Lock()
	inbox := lp.inbox
	lp.inbox = nil
	lp.mu.Unlock()
	for _, f := range inbox {
		f(lp)
	}
}

// countEvery is how often the byte counters of open connections are brought up to date.
const countEvery = int64(time.Second)

// count notes that c moved bytes the metrics do not have; they get them within countEvery.
func (lp *loop) count(c *tcpConn, now int64) {
	lp.dirty = append(lp.dirty, c)
	if lp.due == 0 || lp.due > now+countEvery {
		lp.due = now + countEvery
	}
}

// sweep brings the byte counters up to date, runs the timers that are due and finds when to
// look next.
func (lp *loop) sweep() {
	now := time.Now().UnixNano()
	for _, c := range lp.dirty {
		if c.dirty { // else counted at its end (and maybe reused since)
			c.countBytes()
		}
	}
	clear(lp.dirty)
	lp.dirty = lp.dirty[:0]
	lp.due = 0
	for t := range lp.timers {
		next := t.expire(lp, now)
		if next == 0 {
			delete(lp.timers, t)
			continue
		}
		if lp.due == 0 || next < lp.due {
			lp.due = next
		}
	}
	if lp.due != 0 {
		lp.due = max(lp.due, now+minSweep)
	}
}

func (lp *loop) newConn() *tcpConn {
	lp.conns.Add(1)
	if k := len(lp.free); k > 0 {
		c := lp.free[k-1]
		lp.free = lp.free[:k-1]
		return c
	}
	return &tcpConn{}
}

// freeConn keeps an ended connection for reuse; nothing refers to it any more (its
// descriptors and timer are forgotten).
func (lp *loop) freeConn(c *tcpConn) {
	lp.conns.Add(-1)
	// c.spare is no longer referred to: early and pending, which held it, ended with c.
	if len(lp.free) < 1024 {
		*c = tcpConn{spare: c.spare}
		lp.free = append(lp.free, c)
	}
}

// datagrams returns the loop's UDP batch buffers, made on first use.
func (lp *loop) datagrams() *datagrams {
	if lp.dgrams == nil {
		lp.dgrams = newDatagrams()
	}
	return lp.dgrams
}

// pipe carries spliced bulk data between two sockets; n is what it holds.
type pipe struct {
	r, w int
	n    int
}

// pipeSize is what a pipe is asked to hold (as Go's own splice does).
const pipeSize = 1 << 20

func (lp *loop) getPipe() (*pipe, error) {
	if k := len(lp.pipes); k > 0 {
		p := lp.pipes[k-1]
		lp.pipes = lp.pipes[:k-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize) // a smaller pipe still works
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for the next bulk transfer, up to a few per loop.
func (lp *loop) putPipe(p *pipe) {
	if p.n == 0 && len(lp.pipes) < 16 {
		lp.pipes = append(lp.pipes, p)
		return
	}
	closeNow(p.r)
	closeNow(p.w)
}

// Responsive reports whether every event loop runs: each is handed a no-op and must have run
// it within timeout. A loop stuck in a handler, or starved, fails it: the watchdog behind the
// agent's /healthz and its fitness to hold VIPs.
func Responsive(timeout time.Duration) error {
	if _, err := loopAt(0); err != nil {
		return err
	}
	deadline := time.After(timeout)
	dones := make([]chan struct{}, len(loops))
	for i, lp := range loops {
		dones[i] = make(chan struct{})
		done := dones[i]
		lp.do(func(*loop) { close(done) })
	}
	for i, done := range dones {
		select {
		case <-done:
		case <-deadline:
			return fmt.Errorf("event loop %d has not run for %v", i, timeout)
		}
	}
	return nil
}
