package agent

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/l4lb/l4lb/dataplane/nat"
)

// FlowSync keeps the kernel path's connections alive across a VIP move, as conntrackd keeps a
// backup LVS director's table: the holder of a VIP tells the node that would take it over (its
// successor, Ownership.Successors) of each flow as it starts and ends, and of all its open
// flows every snapshotEvery; a node about to answer for a VIP writes the flows it was told of
// into its own conntrack table first (Restore). Replies from members follow the VIP (the
// table gives flows to members the VIP as their source), so the new holder carries both ways
// on.
//
// A flow reaches the successor within flushEvery of its first packet (plus a datagram's
// trip): a connection younger than that when its holder dies is unknown to the successor,
// whose stack answers its next segment with a reset. The messages are datagrams of the
// gossip (encrypted with its key); one lost is made up for by the next snapshot.
type FlowSync struct {
	Table      *nat.Table
	Send       func(node string, msg []byte) error
	Successors func() map[string]string // VIP -> node, of the VIPs held here
	Log        *slog.Logger

	mu         sync.Mutex
	successors map[netip.Addr]string // Successors, read at each flush (tell runs for every flow)
	pending    map[string][][]byte   // encoded flows by node, to send at the next flush
	received   map[netip.Addr]map[nat.FlowKey]told
	// unsure are new connections the SYN proxy set up, told of before their shift was
	// known: each flush reads them again (Table.Reread) until they are complete.
	unsure []unsure
}

type unsure struct {
	f     nat.Flow
	since time.Time
}

type told struct {
	f  nat.Flow
	at time.Time
	// listed: a snapshot named it (a flow told of only as it started, and named by no snapshot
	// since, has ended: short connections would otherwise be kept for toldFor).
	listed bool
}

const (
	flushEvery    = 50 * time.Millisecond
	snapshotEvery = 10 * time.Second
	// A flow told of by no snapshot for this long has ended (its end was lost, or it ended
	// before a snapshot could name it: a short connection's end comes 10 s after it closed,
	// with the kernel path's TIME_WAIT).
	toldFor     = 3*snapshotEvery + 5*time.Second
	unlistedFor = snapshotEvery + 2*time.Second
	watchRetry  = 5 * time.Second
	// unsureFor is how long a connection the SYN proxy set up is read again for its shift
	// before it is left to the next snapshot: its member answers within timeoutMemberConnect.
	unsureFor = 5 * time.Second
	// maxDatagram keeps a message within one unfragmented datagram, with gossip's framing.
	maxDatagram = 1200
)

// Start runs until ctx is done: while this node holds VIPs it watches the table's flows and
// tells each VIP's successor of them.
func (s *FlowSync) Start(ctx context.Context) error {
	flush, snapshot := time.NewTicker(flushEvery), time.NewTicker(snapshotEvery)
	defer flush.Stop()
	defer snapshot.Stop()
	var stop func()
	var failed <-chan error
	var retry time.Time // a watch that failed is not tried again before (no log at every flush)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			s.Log.Warn("watching the kernel path's flows; trying again in a while", "err", err, "in", watchRetry)
			stop, failed, retry = nil, nil, time.Now().Add(watchRetry)
		case <-snapshot.C:
			s.expire()
			if stop != nil {
				if flows, err := s.Table.Flows(); err != nil {
					s.Log.Warn("reading the kernel path's flows", "err", err)
				} else {
					for _, f := range flows {
						if f.Complete() {
							s.queue(f, false, true)
						}
					}
				}
			}
		case <-flush.C:
			succ := map[netip.Addr]string{}
			for vip, node := range s.Successors() {
				if a, err := netip.ParseAddr(vip); err == nil {
					succ[a.Unmap()] = node
				}
			}
			s.mu.Lock()
			s.successors = succ
			s.mu.Unlock()
			holds := len(succ) > 0
			switch {
			case holds && stop == nil && time.Now().After(retry):
				var err error
				if stop, failed, err = s.Table.Watch(s.tell); err != nil {
					s.Log.Warn("watching the kernel path's flows; trying again in a while", "err", err, "in", watchRetry)
					stop, failed, retry = nil, nil, time.Now().Add(watchRetry)
				}
			case !holds && stop != nil:
				stop()
				stop, failed = nil, nil
			}
			s.settle()
			s.flush()
		}
	}
}

// tell queues f, as it started or ended, for the successor of its VIP, if this node holds it.
// A connection the SYN proxy set up is told of before its shift is known: it waits for
// settle.
func (s *FlowSync) tell(f nat.Flow, ended bool) {
	if !ended && !f.Complete() {
		s.mu.Lock()
		s.unsure = append(s.unsure, unsure{f, time.Now()})
		s.mu.Unlock()
		return
	}
	s.queue(f, ended, false)
}

// settle reads the connections told of before their shift was known again: those complete
// are queued, those gone or unsure for unsureFor dropped (a snapshot names them if they live
// on).
func (s *FlowSync) settle() {
	s.mu.Lock()
	todo := s.unsure
	s.unsure = nil
	s.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	flows := make([]nat.Flow, len(todo))
	since := map[nat.FlowKey]time.Time{}
	for i, u := range todo {
		flows[i], since[u.f.Key()] = u.f, u.since
	}
	now, err := s.Table.Reread(flows)
	if err != nil {
		s.Log.Debug("reading connections the SYN proxy set up", "err", err)
	}
	var still []unsure
	for _, f := range now {
		switch {
		case f.Complete():
			s.queue(f, false, false)
		case time.Since(since[f.Key()]) < unsureFor:
			still = append(still, unsure{f, since[f.Key()]})
		}
	}
	s.mu.Lock()
	s.unsure = append(s.unsure, still...)
	s.mu.Unlock()
}

// queue queues f for the successor of its VIP; listed: f is part of a snapshot.
func (s *FlowSync) queue(f nat.Flow, ended, listed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	to := s.successors[f.VIP.Addr()]
	if to == "" {
		return
	}
	if s.pending == nil {
		s.pending = map[string][][]byte{}
	}
	s.pending[to] = append(s.pending[to], encodeFlow(f, ended, listed))
}

// flush sends what is queued, in datagrams of whole flows.
func (s *FlowSync) flush() {
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for node, flows := range pending {
		var msg []byte
		for i, f := range flows {
			msg = append(msg, f...)
			if i == len(flows)-1 || len(msg)+len(flows[i+1]) > maxDatagram {
				if err := s.Send(node, msg); err != nil {
					s.Log.Debug("telling the successor of flows", "node", node, "err", err)
				}
				msg = nil
			}
		}
	}
}

// Received takes in what another node told of its flows.
func (s *FlowSync) Received(msg []byte) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.received == nil {
		s.received = map[netip.Addr]map[nat.FlowKey]told{}
	}
	for len(msg) > 0 {
		f, ended, listed, rest, ok := decodeFlow(msg)
		if !ok {
			return // a message of another version: nothing of it can be trusted
		}
		msg = rest
		vip := f.VIP.Addr()
		if ended {
			delete(s.received[vip], f.Key())
			continue
		}
		if s.received[vip] == nil {
			s.received[vip] = map[nat.FlowKey]told{}
		}
		s.received[vip][f.Key()] = told{f: f, at: now, listed: listed || s.received[vip][f.Key()].listed}
	}
}

// expire forgets the flows no snapshot told of for toldFor.
func (s *FlowSync) expire() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for vip, flows := range s.received {
		for k, t := range flows {
			if age := now.Sub(t.at); age > toldFor || !t.listed && age > unlistedFor {
				delete(flows, k)
			}
		}
		if len(flows) == 0 {
			delete(s.received, vip)
		}
	}
}

// Restore writes into the kernel the flows this node was told of for vip, which it is about
// to answer for.
func (s *FlowSync) Restore(vip netip.Addr) {
	s.mu.Lock()
	flows := make([]nat.Flow, 0, len(s.received[vip]))
	for _, t := range s.received[vip] {
		flows = append(flows, t.f)
	}
	s.mu.Unlock()
	if len(flows) == 0 {
		return
	}
	n, err := s.Table.Restore(flows)
	s.Log.Info("carrying on the connections of a VIP taken over", "vip", vip, "told", len(flows), "restored", n)
	if err != nil {
		s.Log.Warn("restoring connections of a VIP taken over", "vip", vip, "err", err)
	}
}

// A flow on the wire: a byte of flags (ended, IPv6, listed by a snapshot, shifted), the
// protocol, then the client, the VIP, the member and the source, each an address (4 or 16
// bytes) and a port; a shifted flow's sequence shift last.
const (
	flowEnded   = 1 << 0
	flowIPv6    = 1 << 1
	flowListed  = 1 << 2
	flowShifted = 1 << 3 // set up by the SYN proxy: its sequence shift follows (4 bytes)
)

func encodeFlow(f nat.Flow, ended, listed bool) []byte {
	var flags byte
	if ended {
		flags |= flowEnded
	}
	if listed {
		flags |= flowListed
	}
	if f.Client.Addr().Is6() {
		flags |= flowIPv6
	}
	if f.SynProxy.Set && f.SynProxy.Adjusted {
		flags |= flowShifted
	}
	b := []byte{flags, f.Protocol}
	for _, a := range []netip.AddrPort{f.Client, f.VIP, f.Member, f.Source} {
		b = append(b, a.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, a.Port())
	}
	if flags&flowShifted != 0 {
		b = binary.BigEndian.AppendUint32(b, f.SynProxy.SeqOffset)
	}
	return b
}

func decodeFlow(b []byte) (f nat.Flow, ended, listed bool, rest []byte, ok bool) {
	if len(b) < 2 || b[0]&^(flowEnded|flowIPv6|flowListed|flowShifted) != 0 {
		return f, false, false, nil, false
	}
	size := 4
	if b[0]&flowIPv6 != 0 {
		size = 16
	}
	b0 := b[0]
	ended, listed, f.Protocol = b0&flowEnded != 0, b0&flowListed != 0, b[1]
	b = b[2:]
	if len(b) < 4*(size+2) {
		return f, false, false, nil, false
	}
	for _, a := range []*netip.AddrPort{&f.Client, &f.VIP, &f.Member, &f.Source} {
		addr, _ := netip.AddrFromSlice(b[:size])
		*a = netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[size:]))
		b = b[size+2:]
	}
	if b0&flowShifted != 0 {
		if len(b) < 4 {
			return f, false, false, nil, false
		}
		f.SynProxy = nat.SynProxied{Set: true, SeqOffset: binary.BigEndian.Uint32(b), Adjusted: true}
		b = b[4:]
	}
	return f, ended, listed, b, true
}
