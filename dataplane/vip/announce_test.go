package vip

import (
	"sync/atomic"
	"testing"
	"time"
)

// The repeats of an announcement stop once the VIP is let go: after a quick flap, neighbours
// must not be pointed back at a node that no longer answers.
func TestAnnouncementRepeatsStopOnRelease(t *testing.T) {
	saved := announceAt
	announceAt = []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
	t.Cleanup(func() { announceAt = saved })
	var sent atomic.Int32
	send := func() error { sent.Add(1); return nil }

	repeat(send, func() bool { return true })
	if n := sent.Load(); n != 3 {
		t.Fatalf("held throughout: %d repeats, want 3", n)
	}
	sent.Store(0)
	var checks atomic.Int32
	repeat(send, func() bool { return checks.Add(1) == 1 }) // released after the first repeat
	if n := sent.Load(); n != 1 {
		t.Fatalf("released after one repeat: %d repeats sent, want 1", n)
	}
}
