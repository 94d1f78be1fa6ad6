package proxy

import (
	"testing"
	"time"
)

// TestResponsiveFailsWhileALoopIsStuck proves the engine's health check can fail: a loop held
// in a handler does not run the no-op in time, and once it is free the check passes again.
func TestResponsiveFailsWhileALoopIsStuck(t *testing.T) {
	if err := Responsive(time.Second); err != nil {
		t.Fatalf("idle loops: %v", err)
	}
	lp, err := loopAt(0)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	lp.do(func(*loop) { <-release }) // a handler that never returns
	if err := Responsive(100 * time.Millisecond); err == nil {
		t.Fatal("a stuck loop passed the check")
	}
	close(release)
	if err := Responsive(time.Second); err != nil {
		t.Fatalf("after the loop was freed: %v", err)
	}
}
