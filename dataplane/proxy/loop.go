package proxy

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop carries the small-message path of TCP connections without a goroutine per
// connection, the way HAProxy's threads do: its own epoll set (level-triggered) holds the
// source socket of every half that waits for data, and one goroutine per loop reads what is
// ready and writes it straight on. An idle connection so costs its two sockets and a table
// entry, not two parked goroutines with their stacks. A half leaves the loop for a goroutine
// of its own only when it moves bulk data (spliced by io.Copy) or its destination cannot
// take more at once.
//
// The epoll descriptor itself is registered in Go's poller (as an *os.File), so a loop with
// nothing to do parks its goroutine like any blocked read instead of holding a thread in
// epoll_wait.
type loop struct {
	ep   int
	wake int // an eventfd: goroutines ask the loop to abort connections through it
	file *os.File

	mu     sync.Mutex
	halves map[int32]*half // by source descriptor
	aborts []*conn

	// next is when the earliest idle timeout of a half in the loop falls due (unix
	// nanoseconds, 0: none); the file's read deadline wakes the loop then.
	next atomic.Int64
}

// minSweep bounds how often the idle timeouts are checked: they fire at most this late.
const minSweep = 10 * time.Millisecond

var (
	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
	loopNext  atomic.Uint32
)

// pickLoop returns one of the process's loops (one per core), in turn. The loops live as long
// as the process: connections outlive the listeners and servers that accepted them.
func pickLoop() (*loop, error) {
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
	return loops[loopNext.Add(1)%uint32(len(loops))], nil
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
	return &loop{ep: ep, wake: wake, file: os.NewFile(uintptr(ep), "l4lb-loop"), halves: map[int32]*half{}}, nil
}

// add puts a half in the loop; it may be called from any goroutine.
func (lp *loop) add(h *half) error {
	h.inLoop = true
	lp.mu.Lock()
	lp.halves[h.fd] = h
	lp.mu.Unlock()
	if h.idle > 0 {
		lp.due(time.Unix(0, h.c.seen.Load()).Add(h.idle))
	}
	if err := unix.EpollCtl(lp.ep, unix.EPOLL_CTL_ADD, int(h.fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: h.fd}); err != nil {
		lp.mu.Lock()
		delete(lp.halves, h.fd)
		lp.mu.Unlock()
		h.inLoop = false
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// remove takes a half out of the loop; only the loop's goroutine calls it.
func (lp *loop) remove(h *half) {
	unix.EpollCtl(lp.ep, unix.EPOLL_CTL_DEL, int(h.fd), nil)
	lp.mu.Lock()
	if lp.halves[h.fd] == h {
		delete(lp.halves, h.fd)
	}
	lp.mu.Unlock()
	h.inLoop = false
}

// due makes the loop check idle timeouts at t at the latest.
func (lp *loop) due(t time.Time) {
	for {
		cur := lp.next.Load()
		if cur != 0 && cur <= t.UnixNano() {
			return
		}
		if lp.next.CompareAndSwap(cur, t.UnixNano()) {
			break
		}
	}
	// Another goroutine may set an earlier time between our store and our deadline: set
	// the deadline until it matches what is stored.
	for {
		n := lp.next.Load()
		lp.file.SetReadDeadline(time.Unix(0, n))
		if lp.next.Load() == n {
			return
		}
	}
}

// post asks the loop to abort c; any goroutine may call it.
func (lp *loop) post(c *conn) {
	lp.mu.Lock()
	lp.aborts = append(lp.aborts, c)
	lp.mu.Unlock()
	one := [8]byte{1}
	unix.Write(lp.wake, one[:])
}

func (lp *loop) run() {
	raw, err := lp.file.SyscallConn()
	if err != nil {
		panic(err) // an *os.File always has one
	}
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, chunk)
	for {
		err := raw.Read(func(uintptr) bool {
			for {
				if next := lp.next.Load(); next != 0 && time.Now().UnixNano() >= next {
					return true // idle timeouts are due: sweep, even under constant load
				}
				n, err := epollNow(lp.ep, events)
				if err == unix.EINTR {
					continue
				}
				if n <= 0 {
					return false // drained: park until the epoll set has something again
				}
				for _, ev := range events[:n] {
					if ev.Fd == int32(lp.wake) {
						lp.takeAborts()
						continue
					}
					lp.mu.Lock()
					h := lp.halves[ev.Fd]
					lp.mu.Unlock()
					if h != nil {
						lp.step(h, buf)
					}
				}
			}
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			panic(err) // the loop's own descriptor is never closed
		}
		lp.sweep()
	}
}

func (lp *loop) takeAborts() {
	var b [8]byte
	unix.Read(lp.wake, b[:])
	lp.mu.Lock()
	aborts := lp.aborts
	lp.aborts = nil
	lp.mu.Unlock()
	for _, c := range aborts {
		lp.abort(c)
	}
}

// abort ends a connection at once: its halves in the loop leave it first (so their
// descriptors are closed only once the loop no longer watches them), then both sockets
// close, which wakes any half copying in a goroutine. The client gets a reset.
func (lp *loop) abort(c *conn) {
	for i := range c.halves {
		if h := &c.halves[i]; h.inLoop {
			lp.remove(h)
			c.end(h)
		}
	}
	c.client.SetLinger(0)
	c.client.Close()
	c.backend.Close()
}

// step reads what one half's source has and writes it to its destination.
func (lp *loop) step(h *half, buf []byte) {
	var (
		n    int
		rerr error
	)
	if err := h.srcRaw.Read(func(fd uintptr) bool {
		n, rerr = readNow(int(fd), buf)
		return true
	}); err != nil {
		rerr = err
	}
	switch {
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
		return // nothing after all
	case rerr != nil:
		lp.abort(h.c)
		return
	case n == 0: // EOF: pass the half-close on; the other half goes on alone
		lp.remove(h)
		h.dst.CloseWrite()
		h.c.end(h)
		return
	}
	h.bytes += int64(n)
	h.c.seen.Store(time.Now().UnixNano())
	w, werr := writeSome(h.dstRaw, buf[:n])
	switch {
	case werr != nil && werr != unix.EAGAIN:
		lp.abort(h.c)
	case w < n: // the destination is full: a goroutine waits to write the rest
		lp.remove(h)
		go h.flush(append([]byte(nil), buf[w:n]...))
	case n == len(buf): // bulk data: a goroutine splices the rest in the kernel
		lp.remove(h)
		go h.bulk()
	}
}

// writeSome writes p without blocking and returns how much went out.
func writeSome(dst syscall.RawConn, p []byte) (int, error) {
	var (
		w   int
		err error
	)
	if cerr := dst.Write(func(fd uintptr) bool {
		for w < len(p) {
			var n int
			n, err = writeNow(int(fd), p[w:])
			if n > 0 {
				w += n
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return true
			}
		}
		return true
	}); cerr != nil {
		return w, cerr
	}
	return w, err
}

// sweep aborts the connections whose idle timeout passed and sets when to look next.
func (lp *loop) sweep() {
	now := time.Now()
	var next time.Time
	var expired []*conn
	lp.mu.Lock()
	lp.next.Store(0)
	for _, h := range lp.halves {
		if h.idle <= 0 {
			continue
		}
		at := time.Unix(0, h.c.seen.Load()).Add(h.idle)
		if !at.After(now) {
			expired = append(expired, h.c)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	lp.mu.Unlock()
	for _, c := range expired {
		lp.abort(c)
	}
	if next.IsZero() {
		next = now.Add(time.Second) // a deadline is never cleared, so none is lost to a race
	}
	lp.due(later(next, now.Add(minSweep)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// The loop's system calls never block (non-blocking sockets, epoll_wait with no timeout),
// so they are made without telling the scheduler: entering and leaving a blocking system
// call costs more than these calls do, and a write on loopback that takes over 20 µs makes
// the runtime hand the loop's processor to another thread and wake it back.

func readNow(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func writeNow(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func epollNow(ep int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
