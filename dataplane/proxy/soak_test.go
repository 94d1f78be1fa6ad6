package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/model"
	"github.com/l4lb/l4lb/test/udptest"
)

// soakDuration is how long TestChurnSoak runs: L4LB_SOAK_DURATION (make soak sets minutes),
// or a few seconds in make test.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("L4LB_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("L4LB_SOAK_DURATION: %v", err)
		}
		return d
	}
	return 8 * time.Second
}

// stallBound is how long any one Apply, Close or client request may take before the soak
// calls it a stall: far above what each needs (milliseconds), so only a hang trips it.
const stallBound = 10 * time.Second

// chaosMember is a TCP member that the soak stops, brings back and black-holes.
type chaosMember struct {
	name string
	addr netip.AddrPort

	mu    sync.Mutex
	ln    net.Listener // nil while stopped or black-holed
	holes []io.Closer  // what black-holes its address
}

func newChaosMember(t *testing.T, name string) *chaosMember {
	m := &chaosMember{name: name, addr: freePort(t)}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *chaosMember) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln != nil {
		m.ln.Close()
		m.ln = nil
	}
	for _, h := range m.holes {
		h.Close()
	}
	m.holes = nil
}

// start serves its name on each connection.
func (m *chaosMember) start() {
	m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	ln, err := net.Listen("tcp", m.addr.String())
	if err != nil {
		return // the port is briefly in use; the next turn tries again
	}
	m.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); c.Write([]byte(m.name)) }()
		}
	}()
}

// blackHole makes the member drop connection attempts: a listening socket with a backlog of
// 0 whose one slot is taken, so the kernel drops further SYNs.
func (m *chaosMember) blackHole() {
	m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	ln, err := net.Listen("tcp", m.addr.String())
	if err != nil {
		return
	}
	// Go listens with the system's backlog; fill the queue by never accepting is not enough
	// for a bounded test, so hold the socket and fill it with connections of our own.
	m.holes = append(m.holes, ln)
	for range 300 {
		c, err := net.DialTimeout("tcp", m.addr.String(), 20*time.Millisecond)
		if err != nil {
			break // the queue is full: SYNs are dropped from now on
		}
		m.holes = append(m.holes, c)
	}
}

// soakModel is a random model over fixed listener slots: which listeners exist, which members
// each pool has, with what weights and admin states, and whether a monitor (of a random
// delay) watches them.
func soakModel(rng *rand.Rand, tcpAddrs, udpAddrs []netip.AddrPort, tcpMembers []*chaosMember, udpMembers []netip.AddrPort) model.Model {
	var m model.Model
	monitor := func(typ model.MonitorType) *model.Monitor {
		if rng.IntN(3) == 0 {
			return nil
		}
		delay := time.Duration(5+rng.IntN(50)) * time.Millisecond
		return &model.Monitor{Type: typ, Delay: delay, Timeout: delay / 2, Rise: 1 + rng.IntN(2), Fall: 1 + rng.IntN(2)}
	}
	member := func(name string, a netip.AddrPort) model.Member {
		w := rng.IntN(4) // 0 drains
		return model.Member{Name: name, Address: a, MonitorAddress: a, Weight: w, AdminStateUp: rng.IntN(8) != 0, Backup: rng.IntN(10) == 0}
	}
	algorithms := []model.Algorithm{model.RoundRobin, model.LeastConnections, model.SourceIP, model.SourceIPPort}
	for i, a := range tcpAddrs {
		if rng.IntN(5) == 0 {
			continue // this listener is removed for now
		}
		p := &model.Pool{Key: fmt.Sprintf("soak/tp%d", i), Protocol: model.PoolTCP, Algorithm: algorithms[rng.IntN(len(algorithms))],
			Monitor: monitor(model.MonitorTCP)}
		for _, cm := range tcpMembers {
			if rng.IntN(4) != 0 {
				p.Members = append(p.Members, member(cm.name, cm.addr))
			}
		}
		m.Listeners = append(m.Listeners, model.Listener{Key: fmt.Sprintf("soak/t%d", i), LoadBalancer: "soak/lb", Protocol: model.TCP,
			Address: a, ConnectionLimit: model.DefaultConnectionLimit, TimeoutClientData: 5 * time.Second,
			TimeoutMemberConnect: 100 * time.Millisecond, TimeoutMemberData: 5 * time.Second, Pool: p})
	}
	for i, a := range udpAddrs {
		if rng.IntN(5) == 0 {
			continue
		}
		p := &model.Pool{Key: fmt.Sprintf("soak/up%d", i), Protocol: model.PoolUDP, Algorithm: model.RoundRobin,
			Monitor: monitor(model.MonitorUDPConnect)}
		for j, ua := range udpMembers {
			if rng.IntN(4) != 0 {
				p.Members = append(p.Members, member(fmt.Sprintf("u%d", j), ua))
			}
		}
		m.Listeners = append(m.Listeners, model.Listener{Key: fmt.Sprintf("soak/u%d", i), LoadBalancer: "soak/lb", Protocol: model.UDP,
			Address: a, ConnectionLimit: model.DefaultConnectionLimit, TimeoutClientData: 200 * time.Millisecond, Pool: p})
	}
	return m
}

func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(entries)
}

// TestChurnSoak re-applies the model in random ways (listeners, pools, members, weights,
// admin states and monitors added, changed and removed) while members stop, come back and
// black-hole, and clients connect through TCP and UDP listeners. It fails if an Apply, Close
// or client request stalls, if no traffic gets through, or if goroutines or file descriptors
// are not back at their baseline once the server is closed.
func TestChurnSoak(t *testing.T) {
	duration := soakDuration(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %v", seed, duration)

	var tcpMembers []*chaosMember
	for i := range 4 {
		tcpMembers = append(tcpMembers, newChaosMember(t, fmt.Sprintf("m%d", i)))
	}
	udpMembers := []netip.AddrPort{udptest.Echo(t, "u0"), udptest.Echo(t, "u1"), udptest.Echo(t, "u2")}
	tcpAddrs := []netip.AddrPort{freePort(t), freePort(t), freePort(t)}
	udpAddrs := []netip.AddrPort{freeUDPPort(t), freeUDPPort(t)}

	runtime.GC()
	baseGoroutines, baseFDs := runtime.NumGoroutine(), openFDs()

	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	done := make(chan struct{})
	var wg sync.WaitGroup
	var applies, requests, answered, udpAnswered atomic.Int64
	stalled := make(chan string, 16)
	// The watchdog: every operation under way is registered with its start, and one that has
	// not returned within stallBound is a stall, reported while it still hangs.
	var inflight sync.Map // *int -> operation
	type operation struct {
		what  string
		start time.Time
	}
	timed := func(what string, f func()) {
		id := new(int)
		inflight.Store(id, operation{what, time.Now()})
		defer inflight.Delete(id)
		f()
	}
	watchdog := make(chan struct{})
	go func() {
		for {
			select {
			case <-watchdog:
				return
			case <-time.After(200 * time.Millisecond):
			}
			inflight.Range(func(_, v any) bool {
				if op := v.(operation); time.Since(op.start) > stallBound {
					select {
					case stalled <- fmt.Sprintf("%s has not returned after %v", op.what, time.Since(op.start)):
					default:
					}
				}
				return true
			})
		}
	}()
	defer close(watchdog)

	// The model changes every 10-40 ms.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(10+rng.IntN(30)) * time.Millisecond):
			}
			m := soakModel(rng, tcpAddrs, udpAddrs, tcpMembers, udpMembers)
			timed("Apply", func() { s.Apply(m) })
			applies.Add(1)
		}
	}()
	// Members stop, come back and black-hole every 20-70 ms.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(20+rng.IntN(50)) * time.Millisecond):
			}
			m := tcpMembers[rng.IntN(len(tcpMembers))]
			switch rng.IntN(4) {
			case 0:
				m.stop()
			case 1:
				m.blackHole()
			default:
				m.start()
			}
		}
	}()
	// TCP clients: every request ends, answered or refused, well within the bound.
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(10+c)))
			buf := make([]byte, 16)
			for {
				select {
				case <-done:
					return
				default:
				}
				a := tcpAddrs[rng.IntN(len(tcpAddrs))]
				timed("TCP request", func() {
					requests.Add(1)
					conn, err := net.DialTimeout("tcp", a.String(), stallBound)
					if err != nil {
						return
					}
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(stallBound + time.Second))
					if n, _ := io.ReadFull(conn, buf[:2]); n == 2 {
						answered.Add(1)
					}
				})
			}
		}()
	}
	// A UDP client.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 20))
		buf := make([]byte, 64)
		for {
			select {
			case <-done:
				return
			default:
			}
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(udpAddrs[rng.IntN(len(udpAddrs))]))
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(100 * time.Millisecond))
			c.Write([]byte("ping"))
			if _, err := c.Read(buf); err == nil {
				udpAnswered.Add(1)
			}
			c.Close()
		}
	}()

	select {
	case msg := <-stalled:
		var stacks bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("stalled: %s\n%s", msg, stacks.String())
	case <-time.After(duration):
	}
	close(done)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case msg := <-stalled:
		t.Fatalf("stalled: %s", msg)
	}
	select {
	case msg := <-stalled:
		t.Fatalf("stalled: %s", msg)
	default:
	}
	stalls(t, "Close", stallBound, s.Close)
	for _, m := range tcpMembers {
		m.stop()
	}
	t.Logf("%d applies, %d TCP requests (%d answered), %d UDP answers", applies.Load(), requests.Load(), answered.Load(), udpAnswered.Load())
	if applies.Load() == 0 || answered.Load() == 0 || udpAnswered.Load() == 0 {
		t.Fatal("no traffic got through the churn")
	}

	// Everything the server started ends, and every socket it opened is closed. Connections
	// being torn down take a moment, so this waits for it rather than sampling once.
	deadline := time.Now().Add(stallBound)
	for {
		runtime.GC()
		g, fds := runtime.NumGoroutine(), openFDs()
		if g <= baseGoroutines+2 && fds <= baseFDs+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Close: %d goroutines (baseline %d), %d file descriptors (baseline %d)", g, baseGoroutines, fds, baseFDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
