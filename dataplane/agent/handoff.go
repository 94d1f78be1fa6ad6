package agent

import (
	"context"
	"errors"

	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/model"
)

// A node whose agent restarts (an upgrade of the DaemonSet, a deleted pod) keeps serving when
// no other node can take its VIPs, the single-node case: the stopping agent hands its
// listeners to the kernel (the nftables table HandOffTable, which sends new connections and
// datagrams straight to the members, as UDP listeners are always carried) and leaves its VIPs
// on the node, answered by the kernel; the connections it proxies finish before it exits.
// The next agent adopts the VIPs, binds its listeners, answers for the VIPs and retires the
// table; connections the kernel started stay with their members (conntrack holds them).
// The kernel carries them for a limited time (Stopping.Limit): the members' health is frozen
// meanwhile, and no agent runs here to see another node take the VIPs; if no agent has taken
// over by then (it crash-loops, its image cannot be pulled), the kernel stops answering and
// starting flows for them by itself, and any other node may take them.
const (
	HandOffTable = "l4lb-handoff"
	// HandOffTag marks the flows the hand-off table starts ('H'), apart from the UDP table's.
	HandOffTag = 0x48
	// takeOverLimit bounds how long a new agent leaves the kernel carrying listeners it cannot
	// take (a VIP another node now holds, a listener that fails to bind).
	takeOverLimit = 30 * time.Second
)

// Stopping is how the agent leaves on SIGTERM or SIGINT.
type Stopping struct {
	Agent *Agent
	// Grace bounds the wait for other nodes to take this node's VIPs.
	Grace time.Duration
	// Drain bounds the wait for proxied connections to finish after a hand-off.
	Drain time.Duration
	// Limit bounds how long the kernel carries the listeners and answers for the VIPs after a
	// hand-off, with no agent to take them over.
	Limit time.Duration
	// Restarts says whether another agent will start on this node (the pod's DaemonSet
	// stays). Nil: never, so the VIPs go with the agent.
	Restarts func(context.Context) bool
	Log      *slog.Logger
}

// Context returns a context that ends once the agent may stop after SIGTERM or SIGINT: when
// other nodes can take this node's VIPs, after they took them; when none can and another
// agent will start here, after the hand-off and the drain; else after Grace. A second
// signal ends it at once.
func (s Stopping) Context() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer cancel()
		<-sig
		own := s.Agent.Ownership
		if own != nil {
			m := own.Gossip.Meta()
			m.Draining = true
			own.Gossip.SetMeta(m)
		}
		wait := func(d time.Duration, done func() bool) bool {
			end := time.Now().Add(d)
			for !done() && time.Now().Before(end) {
				select {
				case <-sig:
					return false
				case <-time.After(50 * time.Millisecond):
				}
			}
			return true
		}
		if (own == nil || own.Alone()) && s.Restarts != nil && s.Restarts(ctx) {
			n, err := s.Agent.HandOff(s.Limit)
			switch {
			case err != nil:
				s.Log.Error("cannot hand the listeners to the kernel: they stop with the agent", "err", err)
				return
			case n == 0:
				return // nothing to carry
			}
			s.Log.Info("listeners handed to the kernel until the next agent starts", "listeners", n)
			// Connections already in the accept queues are taken before the listeners close.
			wait(200*time.Millisecond, func() bool { return false })
			s.Agent.Server.Close()
			wait(s.Drain, func() bool { return s.Agent.Server.Open() == 0 })
			s.Log.Info("stopping", "connectionsLeft", s.Agent.Server.Open())
			return
		}
		if own != nil && !wait(s.Grace, func() bool { return len(own.Held()) == 0 }) {
			return
		}
		// The VIPs are gone from here; serve what is already in the accept queues, and let
		// the new holders announce themselves, before the listeners close.
		wait(1500*time.Millisecond, func() bool { return false })
	}()
	return ctx
}

// HandOff gives the kernel the listeners of the VIPs this node holds and leaves the VIPs to
// it, for limit at most; from here on the agent changes nothing. It returns how many listeners
// the kernel took: with none to take, nothing is handed off and the agent stops as it would
// otherwise.
func (a *Agent) HandOff(limit time.Duration) (int, error) {
	a.reconciling.Lock() // a reconcile under way finishes first; none starts after
	defer a.reconciling.Unlock()
	held := a.VIPs.Held()
	ls := a.Server.HandOffListeners(func(l model.Listener) bool { return slices.Contains(held, l.Address.Addr().Unmap()) })
	if len(ls) == 0 {
		return 0, nil
	}
	a.handedOff.Store(true)
	t, err := nat.Open(HandOffTable, HandOffTag)
	if err != nil {
		return 0, err
	}
	t.Expire(limit)
	if err := t.Apply(ls); err != nil {
		return 0, err
	}
	return len(ls), a.VIPs.Release(limit)
}

// HandedOff reports whether the agent gave its listeners to the kernel (HandOff).
func (a *Agent) HandedOff() bool { return a.handedOff.Load() }

// takeOver retires the table a previous agent handed its listeners to, once this agent
// serves them: it has joined the other nodes and answers every VIP the kernel answered (or
// no longer holds it). Called after each reconcile applied the model, until done.
func (a *Agent) takeOver(log logr.Logger) {
	if !a.inherited {
		return
	}
	joined := a.Ownership == nil || a.Ownership.Joined()
	if !(joined && len(a.VIPs.HandedOff()) == 0) && time.Since(a.started) < takeOverLimit {
		return
	}
	a.inherited = false
	if err := nat.Retire(HandOffTable); err != nil {
		log.Error(err, "cannot retire the listeners the previous agent left to the kernel")
		return
	}
	log.Info("took the listeners over from the kernel")
	go removeWhenIdle(log)
}

// removeWhenIdle removes the retired hand-off table once no flow it started is left.
func removeWhenIdle(log logr.Logger) {
	for {
		n, err := nat.FlowsOf(HandOffTag)
		if err == nil && n == 0 {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if err := nat.Remove(HandOffTable); err != nil {
		log.Error(err, "removing the retired hand-off table")
	}
}

// Cleanup removes what agents leave on the node when they cannot stop cleanly (SIGKILL, a
// node drained by force during an uninstall): the VIPs on iface and l4lb's nftables tables.
// A next agent would adopt or remove them itself; this is for a node none will run on again.
func Cleanup(iface string) error {
	return errors.Join(vip.Clean(iface), nat.RemoveAll(TablePrefix))
}

// TablePrefix begins the name of every nftables table an agent makes (its kernel path's, the
// hand-off's, the ARP guard's).
const TablePrefix = "l4lb-"
