package agent

import (
	"context"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/l4lb/l4lb/internal/model"
)

// snapshot is what the agent served at one reconciliation, for the status writes.
type snapshot struct {
	objs    model.Objects
	res     model.Result
	served  model.Model
	failed  map[string]error
	vipErrs map[string]error
	held    map[string]bool
}

// reporter writes status from the latest snapshot on a goroutine of its own: snapshots posted
// while a write is slow replace each other (only the latest matters), and a failed round is
// tried again with backoff. Serving never waits for it.
type reporter struct {
	write  func(context.Context, snapshot) error
	latest chan snapshot
}

func newReporter(write func(context.Context, snapshot) error) *reporter {
	return &reporter{write: write, latest: make(chan snapshot, 1)}
}

// post replaces any snapshot not written yet.
func (r *reporter) post(s snapshot) {
	for {
		select {
		case r.latest <- s:
			return
		default:
		}
		select {
		case <-r.latest:
		default:
		}
	}
}

// Start writes until ctx ends; a manager Runnable.
func (r *reporter) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("status")
	backoff := time.Duration(0)
	var pending *snapshot
	for {
		var retry <-chan time.Time
		if pending != nil {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case s := <-r.latest:
			pending = &s
			backoff = 0
		case <-retry:
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.write(wctx, *pending)
		cancel()
		if err == nil {
			pending = nil
			continue
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
		log.V(1).Info("status writes failed; retrying", "in", backoff, "err", err)
	}
}
