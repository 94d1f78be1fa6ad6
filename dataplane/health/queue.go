package health

import "sync"

// eventQueue is an unbounded FIFO of transitions: a probe puts without ever blocking, the
// dispatcher takes everything queued at once. Unbounded is safe: a probe makes at most one
// transition per check, and the dispatcher drains the queue as fast as notify returns.
type eventQueue struct {
	mu     sync.Mutex
	events []Event
	closed bool
	wake   chan struct{} // one pending wake-up at most
}

func newEventQueue() *eventQueue { return &eventQueue{wake: make(chan struct{}, 1)} }

func (q *eventQueue) put(e Event) {
	q.mu.Lock()
	if !q.closed {
		q.events = append(q.events, e)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take waits for events and returns them all; ok is false once the queue is closed.
func (q *eventQueue) take() (events []Event, ok bool) {
	for {
		q.mu.Lock()
		events, q.events = q.events, nil
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		if len(events) > 0 {
			return events, true
		}
		<-q.wake
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
