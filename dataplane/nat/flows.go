package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// What the kernel counts of the table's flows, read and ended through conntrack.

// Conntrack's TCP states: answered by the member, not yet by the client (TCP_CONNTRACK_SYN_RECV),
// and ended (_TIME_WAIT, _CLOSE).
const (
	tcpSynRecv  = 2
	tcpTimeWait = 7
	tcpClose    = 8
)

// Stats are the table's counters.
type Stats struct {
	// Members holds each listener's members' counts, by listener key then member key.
	Members map[string]map[string]Counts
	// Refused holds each listener's refused datagrams (source not allowed, over the
	// connection limit, no member).
	Refused map[string]uint64
	// Cookies holds each listener's SYNs left to the SYN proxy while flooded.
	Cookies map[string]uint64
}

// Stats reads the counters and counts the half-open flows; with open, the open flows too
// (Counts.Active, else 0). Counting the open flows reads every flow of the table, ended TCP
// connections included (conntrack keeps each timeWait): its cost grows with the table, and
// a node of short connections holds many. The half-open are a few in quiet times however
// many the table holds: the kernel sends over only those.
func (t *Table) Stats(open bool) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.conn.GetNamedObjects(t.table)
	if err != nil {
		return Stats{}, err
	}
	values := map[string]*expr.Counter{}
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok {
			if c, ok := no.Obj.(*expr.Counter); ok {
				values[no.Name] = c
			}
		}
	}
	var active, halfOpen map[uint32]int
	if open {
		active, halfOpen, err = t.countFlows(true)
	} else {
		halfOpen, err = t.halfOpenFlows()
	}
	if err != nil {
		return Stats{}, err
	}
	payload := func(name string, header uint64) uint64 {
		c := values[name]
		if c == nil || c.Bytes < c.Packets*header { // TCP's header is an estimate
			return 0
		}
		return c.Bytes - c.Packets*header
	}
	st := Stats{Members: map[string]map[string]Counts{}, Refused: map[string]uint64{}, Cookies: map[string]uint64{}}
	for k, id := range t.listenerIDs {
		st.Members[k] = map[string]Counts{}
		if c := values[chain("e", id)]; c != nil {
			st.Refused[k] = c.Packets
		}
		if c := values[chain("y", id)]; c != nil {
			st.Cookies[k] = c.Packets
		}
	}
	for k, id := range t.memberIDs {
		l := listenerOf(k)
		var started uint64
		if c := values[chain("n", id)]; c != nil {
			started = c.Packets
		}
		st.Members[l][k[len(l)+1:]] = Counts{
			BytesIn: payload(chain("i", id), t.flowsOf[id].header), BytesOut: payload(chain("o", id), t.flowsOf[id].header),
			Flows: started, Active: active[t.tag|id], HalfOpen: halfOpen[t.tag|id],
		}
	}
	return st, nil
}

// openFlows counts the table's conntrack flows by mark, without the ended TCP connections
// conntrack still remembers if active.
func (t *Table) openFlows(active bool) (map[uint32]int, error) {
	n, _, err := t.countFlows(active)
	return n, err
}

// countFlows counts the table's conntrack flows by mark (without the ended TCP connections
// conntrack still remembers if active), and those half-open (conntrack's SYN_RECV). The
// kernel filters by the table's tag, so a node's other flows (all of kube-proxy's, say) are
// not sent over. A count needs each flow's mark and TCP state only, and reads only those
// from the kernel's messages: decoding each flow whole, as the conntrack library does, was
// most of a count's cost to the agent (BenchmarkReadFlows; docs/benchmarks.md, "Reading the
// table").
func (t *Table) countFlows(active bool) (n, halfOpen map[uint32]int, err error) {
	msgs, err := t.dumpAttributes()
	if err != nil {
		return nil, nil, err
	}
	n, halfOpen = map[uint32]int{}, map[uint32]int{}
	for _, attrs := range msgs {
		mark := attribute(attrs, ctaMark)
		if len(mark) != 4 {
			continue
		}
		state := tcpState(attrs)
		if active && endedState(state) {
			continue // conntrack only remembers it a while
		}
		m := binary.BigEndian.Uint32(mark)
		n[m]++
		if state == tcpSynRecv {
			halfOpen[m]++
		}
	}
	return n, halfOpen, nil
}

// dumpAttributes lists the attributes of each of the table's conntrack flows, ended TCP
// connections included, as the kernel sends them (each flow's message after its nfgenmsg),
// for what reads only some of them.
func (t *Table) dumpAttributes() ([][]byte, error) {
	c, err := netfilter.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: ctGet, Flags: netlink.Request | netlink.Dump,
	}, []netfilter.Attribute{
		{Type: ctaMark, Data: netfilter.Uint32Bytes(t.tag)},
		{Type: ctaMarkMask, Data: netfilter.Uint32Bytes(markMask)},
	})
	if err != nil {
		return nil, err
	}
	msgs, err := c.Query(req)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	out := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		if len(m.Data) > 4 {
			out = append(out, m.Data[4:])
		}
	}
	return out, nil
}

// tcpState is the TCP state of a flow's attributes, 0 for another protocol's flow.
func tcpState(attrs []byte) uint8 {
	if s := attribute(attribute(attribute(attrs, ctaProtoInfo), ctaProtoInfoTCP), ctaProtoInfoTCPState); len(s) == 1 {
		return s[0]
	}
	return 0
}

// attribute is the value of the netlink attribute typ among attrs, or nil.
func attribute(attrs []byte, typ uint16) []byte {
	for t, v := range attributes(attrs) {
		if t == typ {
			return v
		}
	}
	return nil
}

// halfOpenFlows counts the table's half-open TCP flows by mark (countFlows' halfOpen). The
// kernel sends over only the flows that saw a reply and are not assured (TCP's are once the
// client answers the member's SYN-ACK); UDP's among them are left out here.
func (t *Table) halfOpenFlows() (map[uint32]int, error) {
	flows, err := t.dump(conntrack.NewFilter().Status(conntrack.StatusSeenReply).
		StatusMask(uint32(conntrack.StatusSeenReply | conntrack.StatusAssured)))
	if err != nil {
		return nil, err
	}
	halfOpen := map[uint32]int{}
	for i := range flows {
		if answeredOnly(&flows[i]) {
			halfOpen[flows[i].Mark]++
		}
	}
	return halfOpen, nil
}

// answeredOnly reports whether f is a half-open TCP connection: answered by the member, not
// yet by the client (conntrack's SYN_RECV).
func answeredOnly(f *conntrack.Flow) bool {
	tcp := f.ProtoInfo.TCP
	return tcp != nil && tcp.State == tcpSynRecv
}

// endedState reports whether a TCP flow in conntrack's state s has ended (0 for another
// protocol's flow: not ended).
func endedState(s uint8) bool { return s == tcpTimeWait || s == tcpClose }

// dump lists the table's conntrack flows, ended TCP connections included, that also pass f
// (conntrack.NewFilter() for all).
func (t *Table) dump(f conntrack.Filter) ([]conntrack.Flow, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.DumpFilter(f.Mark(t.tag).MarkMask(markMask), nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	return flows, nil
}

// endFlows deletes the flows of the members ids (all of the table's flows with mask
// markMask), so their clients' next datagrams are new flows that choose again.
func (t *Table) endFlows(ids map[uint32]bool, mask uint32) error {
	if len(ids) == 0 {
		return nil
	}
	c, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	var errs []error
	for id := range ids {
		if err := c.FlushFilter(conntrack.NewFilter().Mark(t.tag | id).MarkMask(mask)); err != nil {
			errs = append(errs, fmt.Errorf("conntrack: %w", err))
		}
	}
	return errors.Join(errs...)
}
