package health

import (
	"context"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/l4lb/l4lb/internal/model"
)

// Target is one member checked by one pool's monitor.
type Target struct {
	Pool    string // the pool's key
	Member  string // the member's name
	Address netip.AddrPort
	Monitor *model.Monitor
}

// Event is a member changing state.
type Event struct {
	Pool    string
	Member  string
	Address netip.AddrPort
	Up      bool
	Reason  string // the last check's error when down
}

// Manager runs one probe loop per target. Members start up, as HAProxy's do, so a pool with a
// long delay serves at once; they go down after fall consecutive failures.
//
// Transitions reach notify from one goroutine of the manager's own, in the order they
// happened, never from a probe: Sync waits for the probes it stops, and a subscriber may hold
// the lock its caller holds around Sync (the proxy's Apply does), so a probe that called the
// subscriber itself could wait for Sync while Sync waits for it.
type Manager struct {
	notify func(Event)

	mu     sync.Mutex
	probes map[string]*probe
	closed bool

	queue      *eventQueue
	dispatched chan struct{} // closed when the dispatcher has stopped
}

type probe struct {
	target Target
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	state Counter
}

// NewManager returns a manager that calls notify on every transition, from one goroutine.
func NewManager(notify func(Event)) *Manager {
	if notify == nil {
		notify = func(Event) {}
	}
	m := &Manager{notify: notify, probes: map[string]*probe{}, queue: newEventQueue(), dispatched: make(chan struct{})}
	go m.dispatch()
	return m
}

// dispatch hands queued transitions to notify until Close.
func (m *Manager) dispatch() {
	defer close(m.dispatched)
	for {
		events, ok := m.queue.take()
		if !ok {
			return
		}
		for _, e := range events {
			m.notify(e)
		}
	}
}

func targetKey(t Target) string { return t.Pool + "\x00" + t.Member + "\x00" + t.Address.String() }

// Sync makes the running probes those of targets: new ones start, gone ones stop, and a probe
// whose monitor changed restarts keeping its member's state.
func (m *Manager) Sync(targets []Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	want := map[string]Target{}
	for _, t := range targets {
		want[targetKey(t)] = t
	}
	for k, p := range m.probes {
		t, keep := want[k]
		if keep && reflect.DeepEqual(*t.Monitor, *p.target.Monitor) {
			continue
		}
		p.stop()
		delete(m.probes, k)
		if keep {
			m.start(k, t, p.current())
		}
	}
	for k, t := range want {
		if _, running := m.probes[k]; !running {
			m.start(k, t, Counter{Up: true})
		}
	}
}

// Up reports a member's state; a member without a probe counts as up.
func (m *Manager) Up(pool, member string, addr netip.AddrPort) bool {
	m.mu.Lock()
	p := m.probes[targetKey(Target{Pool: pool, Member: member, Address: addr})]
	m.mu.Unlock()
	return p == nil || p.current().Up
}

// Close stops every probe, then the dispatcher; transitions not yet delivered are dropped.
// It must not be called from notify.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for k, p := range m.probes {
		p.stop()
		delete(m.probes, k)
	}
	m.mu.Unlock()
	m.queue.close()
	<-m.dispatched
}

func (m *Manager) start(key string, t Target, state Counter) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{target: t, cancel: cancel, done: make(chan struct{}), state: state}
	m.probes[key] = p
	go p.run(ctx, m.queue.put)
}

func (p *probe) current() Counter {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

func (p *probe) run(ctx context.Context, notify func(Event)) {
	defer close(p.done)
	mon := p.target.Monitor
	checker, err := NewChecker(mon)
	if err != nil {
		return
	}
	tick := time.NewTicker(mon.Delay)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, mon.Timeout)
		err := checker.Check(cctx, p.target.Address)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		changed := p.state.Observe(err == nil, mon.Rise, mon.Fall)
		up := p.state.Up
		p.mu.Unlock()
		if changed {
			ev := Event{Pool: p.target.Pool, Member: p.target.Member, Address: p.target.Address, Up: up}
			if err != nil {
				ev.Reason = err.Error()
			}
			notify(ev)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
