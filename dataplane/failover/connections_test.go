package failover

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/lantest"
)

// streams keeps connections through the VIP busy: each sends a line and reads it back every
// 100 ms, end to end (client to member and back), until stop.
type streams struct {
	wg     sync.WaitGroup
	quit   chan struct{}
	mu     sync.Mutex
	errs   map[int]error
	after  map[int]int // lines echoed since mark was set
	marked time.Time
}

func (l *lab) stream(n int) *streams {
	s := &streams{quit: make(chan struct{}), errs: map[int]error{}, after: map[int]int{}}
	for i := range n {
		c := l.dialEcho()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.c.Close()
			for seq := 0; ; seq++ {
				select {
				case <-s.quit:
					return
				case <-time.After(100 * time.Millisecond):
				}
				err := c.try(fmt.Sprintf("connection %d line %d", i, seq))
				s.mu.Lock()
				if err != nil {
					s.errs[i] = err
				} else if !s.marked.IsZero() {
					s.after[i]++
				}
				s.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return s
}

// mark starts counting the lines each connection echoes from now.
func (s *streams) mark() {
	s.mu.Lock()
	s.marked = time.Now()
	s.mu.Unlock()
}

// stop ends the streams and says which broke, and which echoed nothing since mark.
func (s *streams) stop(n int) (broken []string, kept int) {
	close(s.quit)
	s.wg.Wait()
	for i := range n {
		switch {
		case s.errs[i] != nil:
			broken = append(broken, fmt.Sprintf("%d: %v", i, s.errs[i]))
		case s.after[i] == 0:
			broken = append(broken, fmt.Sprintf("%d: nothing echoed after the move", i))
		default:
			kept++
		}
	}
	return broken, kept
}

// kernelPath waits until the agents report the listener carried by the kernel.
func (l *lab) kernelPath(name string) {
	l.t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		var ls lbv1.Listener
		if err := l.k8s.Get(l.ctx, client.ObjectKey{Namespace: "app", Name: name}, &ls); err == nil && ls.Status.DataPath == lbv1.DataPathKernel {
			return
		}
		if time.Now().After(end) {
			l.dumpLogs()
			l.t.Fatalf("listener %s is not carried by the kernel", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKernelConnectionsSurviveAMove: 20 connections stream through a kernel-path listener
// while a client opens a new connection every 20 ms; the holder of the VIP dies (its agent
// SIGKILLed, its link cut), then the new holder is stopped with SIGTERM (a planned move). Every
// connection goes on through both moves, with no reset: the holder told its successor of
// each, and the successor wrote them into its conntrack before it answered for the VIP.
// Three nodes that forward, as Kubernetes nodes do, with the chart's defaults otherwise.
func TestKernelConnectionsSurviveAMove(t *testing.T) {
	const n = 20
	l := newLab(t, 3)
	all := []string{"n1", "n2", "n3"}
	for _, node := range all {
		lantest.Sh(t, "ip", "netns", "exec", l.tp.Hosts[node].NS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
		l.start(node)
	}
	l.createLB()
	l.createEcho()
	l.waitServed("start")
	l.kernelPath("echo")
	l.kernelPath("l")

	for _, move := range []string{"the holder's death", "a planned move"} {
		holder := l.waitSoleAnswer("")
		s := l.stream(n)
		traffic := newClientLoop(l.cl, l.target)
		time.Sleep(time.Second) // the connections' flows reach the successor
		s.mark()
		movedAt := time.Now()
		if move == "a planned move" {
			l.agents[holder].cmd.Process.Signal(syscall.SIGTERM)
		} else {
			l.kill(holder)
			lantest.Sh(t, "ip", "-n", l.tp.Hosts[holder].NS, "link", "set", "eth0", "down")
		}
		next := l.waitSoleAnswer(holder)
		traffic.firstSuccessAfter(t, movedAt, 20*time.Second)
		time.Sleep(3 * time.Second)
		ok, refused, cut := traffic.stop()
		gap := traffic.longestGap()
		broken, kept := s.stop(n)
		fmt.Printf("kernel path, %s: %d of %d open connections kept; longest gap between answered new connections %v (%d answered, %d refused, %d cut)\n",
			move, kept, n, gap.Round(time.Millisecond), ok, refused, cut)
		if len(broken) > 0 {
			l.dumpLogs()
			t.Fatalf("%s (%s -> %s): %d of %d connections broke:\n%s", move, holder, next, len(broken), n, strings.Join(broken, "\n"))
		}
		if move == "the holder's death" {
			lantest.Sh(t, "ip", "-n", l.tp.Hosts[holder].NS, "link", "set", "eth0", "up")
		} else {
			l.agents[holder].cmd.Wait()
		}
		l.start(holder)
		time.Sleep(3 * time.Second)
	}
}
