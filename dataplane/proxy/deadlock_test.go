package proxy

import (
	"bytes"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/tcptest"

	"github.com/l4lb/l4lb/internal/model"
)

// flapping is a member that comes and goes every period: its listener is closed and opened
// again on the same address, so a monitor sees it fail and pass in turn.
func flapping(t *testing.T, period time.Duration) *tcptest.Backend {
	t.Helper()
	b := tcptest.Named(t, "flap")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(period):
			}
			b.Stop()
			select {
			case <-stop:
				return
			case <-time.After(period):
			}
			b.Relisten() // the port may be briefly taken: the next turn tries again
		}
	}()
	t.Cleanup(func() { close(stop); <-done; b.Stop() })
	return b
}

// stalls runs f and fails the test, with every goroutine's stack, if it has not returned
// within limit: the bound is far above what f needs, so only a hang trips it.
func stalls(t *testing.T, what string, limit time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(limit):
		var stacks bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&stacks, 2)
		t.Fatalf("%s stalled for %v:\n%s", what, limit, stacks.String())
	}
}

// TestApplyWhileAMemberFlapsNeverDeadlocks: Apply restarts the probes of a changed monitor
// and waits for them to stop, while those probes report the member's transitions. A probe
// reporting must never wait for Apply, or both wait forever (and Close after them).
func TestApplyWhileAMemberFlapsNeverDeadlocks(t *testing.T) {
	flap := flapping(t, 3*time.Millisecond)
	steady := tcptest.Named(t, "steady")
	l := listenerModel(t, model.RoundRobin, mem("flap", flap, 1), mem("steady", steady, 1))
	s := New(Options{})
	stalls(t, "Apply while a member flaps", 30*time.Second, func() {
		for i := range 300 {
			m := l
			p := *l.Pool
			// A monitor that changes on every Apply: each one stops and restarts the probes.
			p.Monitor = &model.Monitor{Type: model.MonitorTCP, Delay: time.Duration(1+i%3) * time.Millisecond,
				Timeout: time.Millisecond, Rise: 1, Fall: 1}
			m.Pool = &p
			s.Apply(model.Model{Listeners: []model.Listener{m}})
		}
	})
	stalls(t, "Close", 30*time.Second, s.Close)
}
