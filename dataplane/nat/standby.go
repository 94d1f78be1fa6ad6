package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// What another node needs to carry the table's flows on when a VIP moves to it, as
// conntrackd keeps a backup's table for LVS: the holder tells its standby of each flow as it
// starts and ends (Watch, Flows), and the standby writes them into its own conntrack table
// (Restore) before it answers for the VIP. Replies from members come back to whichever node
// holds the VIP, since flows leaving for members carry the VIP as their source (program).

// Flow is one flow of the table, both ways: the client's packets to the VIP, and the member's
// replies to Source, the address the member sees the flow come from (the VIP and the port
// the translation gave it; the client itself when its packets reach the member on lo).
type Flow struct {
	Protocol       uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Client, VIP    netip.AddrPort
	Member, Source netip.AddrPort
	SynProxy       SynProxied // zero unless the SYN proxy set the connection up
}

// SynProxied is what a connection the SYN proxy set up carries besides its addresses
// (synproxy.go): the client's side is numbered from its cookie and the member's from the
// member's own SYN-ACK, and conntrack shifts the sequence numbers of each segment between
// the two.
type SynProxied struct {
	Set bool // the SYN proxy set the connection up
	// SeqOffset is added to the member's sequence numbers on their way to the client (the
	// reply direction's seqadj), known once Adjusted: after the member's SYN-ACK.
	SeqOffset uint32
	Adjusted  bool
}

// Complete reports whether f carries everything another node needs to carry it on: a
// connection the SYN proxy set up is not, until the member has answered.
func (f Flow) Complete() bool { return !f.SynProxy.Set || f.SynProxy.Adjusted }

// FlowKey is the flow's original direction, which names it in conntrack.
type FlowKey struct {
	Protocol    uint8
	Client, VIP netip.AddrPort
}

func (f Flow) Key() FlowKey { return FlowKey{f.Protocol, f.Client, f.VIP} }

// flowOf is the Flow of one the conntrack library decoded (Reread's; flowFrom reads the
// dump's and the watch's events).
func flowOf(c *conntrack.Flow) Flow {
	o, r := c.TupleOrig, c.TupleReply
	return Flow{Protocol: o.Proto.Protocol,
		Client: netip.AddrPortFrom(o.IP.SourceAddress.Unmap(), o.Proto.SourcePort),
		VIP:    netip.AddrPortFrom(o.IP.DestinationAddress.Unmap(), o.Proto.DestinationPort),
		Member: netip.AddrPortFrom(r.IP.SourceAddress.Unmap(), r.Proto.SourcePort),
		Source: netip.AddrPortFrom(r.IP.DestinationAddress.Unmap(), r.Proto.DestinationPort),
		// A flow restored from another node has its shift, not the label.
		SynProxy: SynProxied{Set: labelled(c.Labels) || c.Status.SeqAdjust(), SeqOffset: c.SeqAdjReply.OffsetAfter,
			Adjusted: c.Status.SeqAdjust()}}
}

// ended reports whether conntrack only remembers c (a TCP connection closed).
func ended(c *conntrack.Flow) bool {
	tcp := c.ProtoInfo.TCP
	return tcp != nil && endedState(tcp.State)
}

// Flows are the table's open flows now (a VIP holder's snapshot for its successor), read from
// the attributes a Flow needs, as countFlows reads its, for the same reason.
func (t *Table) Flows() ([]Flow, error) {
	msgs, err := t.dumpAttributes()
	if err != nil {
		return nil, err
	}
	out := make([]Flow, 0, len(msgs))
	for _, attrs := range msgs {
		if endedState(tcpState(attrs)) {
			continue
		}
		if f, ok := flowFrom(attrs); ok {
			out = append(out, f)
		}
	}
	return out, nil
}

// flowFrom is the Flow of a conntrack message's attributes (a dump's or an event's), as
// flowOf is of the library's decoded flow; ok is false when either tuple is missing. One
// pass over them: the watch reads every event of the node.
func flowFrom(attrs []byte) (f Flow, ok bool) {
	var orig, reply []byte
	var status uint32
	for typ, v := range attributes(attrs) {
		switch typ {
		case ctaTupleOrig:
			orig = v
		case ctaTupleReply:
			reply = v
		case ctaStatus:
			if len(v) == 4 {
				status = binary.BigEndian.Uint32(v)
			}
		case ctaSeqAdjReply:
			if o := attribute(v, ctaSeqAdjOffsetAfter); len(o) == 4 {
				f.SynProxy.SeqOffset = binary.BigEndian.Uint32(o)
			}
		case ctaLabels:
			f.SynProxy.Set = labelled(v)
		}
	}
	var err error
	if f.Protocol, f.Client, f.VIP, err = parseTuple(orig); err != nil {
		return Flow{}, false
	}
	if _, f.Member, f.Source, err = parseTuple(reply); err != nil {
		return Flow{}, false
	}
	// A flow restored from another node has its shift, not the label.
	f.SynProxy.Adjusted = status&ipsSeqAdjust != 0
	f.SynProxy.Set = f.SynProxy.Set || f.SynProxy.Adjusted
	return f, true
}

// Restore writes flows into this node's conntrack table as the node that started them had
// them: the same member, the same source towards it, marked for this table's counters. A TCP
// connection is taken as established and its windows are not checked (this node saw none of
// its segments), as conntrackd's backups do. Flows of listeners or members this table does not
// carry are left out, and so are flows conntrack already has. It returns how many it wrote.
//
// Restored flows have conntrack's own timeouts, not their listener's (the kernel attaches a
// timeout policy to a flow only as it starts): an idle one ends after its listener's timeout
// if nothing crosses it, and after conntrack's once something has.
func (t *Table) Restore(flows []Flow) (int, error) {
	t.mu.Lock()
	marks, timeouts := t.flowMarks()
	t.mu.Unlock()
	// The replies are errors only (no acknowledgement is asked for): room for a batch's.
	fd, err := netfilterSocket(4 << 20)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer unix.Close(fd)
	sent, refused := 0, 0
	var errs []error
	var batch []byte
	// The kernel takes a batch of messages in one write and handles them before the write
	// returns: one write per 60 KiB rather than a request and an acknowledgement per flow,
	// which was several times slower (docs/benchmarks.md): the VIP is not answered for until
	// this is done.
	send := func() {
		if len(batch) == 0 {
			return
		}
		if err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			errs = append(errs, fmt.Errorf("conntrack: %w", err))
		}
		batch = batch[:0]
		r, e := restoreErrors(fd)
		refused += r
		errs = append(errs, e...)
	}
	for _, f := range flows {
		mark, ok := marks[memberAt{f.Protocol, f.VIP, f.Member}]
		if !ok {
			continue
		}
		attrs, err := netfilter.MarshalAttributes(restoreAttributes(f, mark, timeouts[listenerAt{f.Protocol, f.VIP}]))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// struct nlmsghdr, struct nfgenmsg (family, version 0, resource 0), the attributes.
		size := unix.NLMSG_HDRLEN + 4 + len(attrs)
		batch = binary.NativeEndian.AppendUint32(batch, uint32(size))
		batch = binary.NativeEndian.AppendUint16(batch, unix.NFNL_SUBSYS_CTNETLINK<<8|ctNew)
		batch = binary.NativeEndian.AppendUint16(batch, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
		batch = binary.NativeEndian.AppendUint32(batch, uint32(sent+1)) // sequence
		batch = binary.NativeEndian.AppendUint32(batch, 0)
		batch = append(batch, byte(family(f.Client.Addr())), 0, 0, 0)
		batch = append(batch, attrs...)
		sent++
		if len(batch) >= 60<<10 {
			send()
		}
	}
	send()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return sent - refused, errors.Join(errs...)
}

// restoreErrors reads the errors the kernel queued for a batch of flows: it returns how many
// flows were not created, and the errors other than "exists already".
func restoreErrors(fd int) (refused int, errs []error) {
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return refused, errs // EAGAIN: nothing more
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return refused, append(errs, err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			code := -int32(binary.NativeEndian.Uint32(m.Data))
			if code == 0 {
				continue
			}
			refused++
			if e := unix.Errno(code); e != unix.EEXIST {
				errs = append(errs, fmt.Errorf("restoring a flow: %w", e))
			}
		}
	}
}

// memberAt and listenerAt find the mark and timeout of a flow by its addresses.
type memberAt struct {
	protocol    uint8
	vip, member netip.AddrPort
}

type listenerAt struct {
	protocol uint8
	vip      netip.AddrPort
}

// flowMarks are the ct marks of the members the table carries, and the seconds a restored
// flow of each listener lives idle. Called with t.mu held.
func (t *Table) flowMarks() (map[memberAt]uint32, map[listenerAt]uint32) {
	marks, timeouts := map[memberAt]uint32{}, map[listenerAt]uint32{}
	for key, cl := range t.carried {
		l := cl.spec
		vip := netip.AddrPortFrom(l.Address.Addr().Unmap(), l.Address.Port())
		proto := l.proto()
		secs := uint32(l.Timeout.Seconds())
		if secs == 0 {
			secs = 120 // conntrack's for a UDP flow both ways
			if proto == unix.IPPROTO_TCP {
				secs = 5 * 24 * 3600 // and for an established connection
			}
		}
		timeouts[listenerAt{proto, vip}] = secs
		for _, m := range l.Members {
			if id, ok := t.memberIDs[key+"\x00"+m.Key]; ok {
				a := netip.AddrPortFrom(m.Address.Addr().Unmap(), m.Address.Port())
				marks[memberAt{proto, vip, a}] = t.tag | id
			}
		}
	}
	return marks, timeouts
}

// ctnetlink's message and attribute numbers (linux/netfilter/nfnetlink_conntrack.h), for
// what the conntrack library cannot send, a flow created with its translations, and what it
// reads at too high a cost, the table's flows (dumpAttributes).
const (
	ctNew    = 0 // IPCTNL_MSG_CT_NEW
	ctGet    = 1 // IPCTNL_MSG_CT_GET
	ctDelete = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoInfo  = 4
	ctaNATSrc     = 6
	ctaTimeout    = 7
	ctaMark       = 8
	ctaNATDst     = 13
	ctaMarkMask   = 21

	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
	ctaIPv6Src    = 3
	ctaIPv6Dst    = 4
	ctaProtoNum   = 1
	ctaProtoSrc   = 2
	ctaProtoDst   = 3

	ctaNATv4Min   = 1
	ctaNATv4Max   = 2
	ctaNATProto   = 3
	ctaNATv6Min   = 4
	ctaNATv6Max   = 5
	ctaNATPortMin = 1
	ctaNATPortMax = 2

	ctaProtoInfoTCP           = 1
	ctaProtoInfoTCPState      = 1
	ctaProtoInfoTCPFlagsOrig  = 4
	ctaProtoInfoTCPFlagsReply = 5

	ctaSeqAdjReply = 16
	ctaLabels      = 22

	ctaSeqAdjCorrectionPos = 1
	ctaSeqAdjOffsetBefore  = 2
	ctaSeqAdjOffsetAfter   = 3

	ipsSeenReply = 1 << 1 // IPS_SEEN_REPLY
	ipsAssured   = 1 << 2 // IPS_ASSURED
	ipsConfirmed = 1 << 3 // IPS_CONFIRMED
	ipsSeqAdjust = 1 << 6 // IPS_SEQ_ADJUST

	tcpEstablished = 3    // TCP_CONNTRACK_ESTABLISHED
	tcpBeLiberal   = 0x08 // IP_CT_TCP_FLAG_BE_LIBERAL
)

func family(a netip.Addr) netfilter.ProtoFamily {
	if a.Unmap().Is4() {
		return netfilter.ProtoIPv4
	}
	return netfilter.ProtoIPv6
}

// restoreAttributes are the attributes that create f untranslated, then translate it to its
// member (CTA_NAT_DST) and to its source (CTA_NAT_SRC), as the holder's rules did: the kernel
// computes the reply direction from them, as it does for a packet.
func restoreAttributes(f Flow, mark, timeout uint32) []netfilter.Attribute {
	attrs := []netfilter.Attribute{
		tuple(ctaTupleOrig, f.Protocol, f.Client, f.VIP),
		tuple(ctaTupleReply, f.Protocol, f.VIP, f.Client),
		// The kernel marks a flow it creates for us confirmed, and refuses a status that
		// says otherwise (EBUSY).
		u32(ctaStatus, ipsSeenReply|ipsAssured|ipsConfirmed),
		u32(ctaTimeout, timeout),
		u32(ctaMark, mark),
	}
	if f.Member != f.VIP {
		attrs = append(attrs, natTo(ctaNATDst, f.Member))
	}
	if f.Source != f.Client {
		attrs = append(attrs, natTo(ctaNATSrc, f.Source))
	}
	if sp := f.SynProxy; sp.Set && sp.Adjusted {
		// The same shift before and after any position, as the synproxy sets it. (The kernel
		// creates the flow without the synproxy's own extension, whatever it is sent: what
		// that would carry, a timestamp shift, the synproxy is set up not to need.)
		attrs = append(attrs, netfilter.Attribute{Type: ctaSeqAdjReply, Nested: true, Children: []netfilter.Attribute{
			u32(ctaSeqAdjCorrectionPos, 0), u32(ctaSeqAdjOffsetBefore, sp.SeqOffset), u32(ctaSeqAdjOffsetAfter, sp.SeqOffset)}})
	}
	if f.Protocol == unix.IPPROTO_TCP {
		liberal := []byte{tcpBeLiberal, tcpBeLiberal} // struct nf_ct_tcp_flags: flags, mask
		attrs = append(attrs, netfilter.Attribute{Type: ctaProtoInfo, Nested: true, Children: []netfilter.Attribute{{
			Type: ctaProtoInfoTCP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoInfoTCPState, Data: []byte{tcpEstablished}},
				{Type: ctaProtoInfoTCPFlagsOrig, Data: liberal},
				{Type: ctaProtoInfoTCPFlagsReply, Data: liberal},
			}}}})
	}
	return attrs
}

func tuple(typ uint16, proto uint8, src, dst netip.AddrPort) netfilter.Attribute {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	ipSrc, ipDst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if s.Is6() {
		ipSrc, ipDst = ctaIPv6Src, ctaIPv6Dst
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
		{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{
			{Type: ipSrc, Data: s.AsSlice()}, {Type: ipDst, Data: d.AsSlice()}}},
		{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoNum, Data: []byte{proto}},
			{Type: ctaProtoSrc, Data: be16(src.Port())}, {Type: ctaProtoDst, Data: be16(dst.Port())}}},
	}}
}

// natTo translates one side of a flow to exactly to (address and port).
func natTo(typ uint16, to netip.AddrPort) netfilter.Attribute {
	a := to.Addr().Unmap()
	lo, hi := uint16(ctaNATv4Min), uint16(ctaNATv4Max)
	if a.Is6() {
		lo, hi = ctaNATv6Min, ctaNATv6Max
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
		{Type: lo, Data: a.AsSlice()}, {Type: hi, Data: a.AsSlice()},
		{Type: ctaNATProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaNATPortMin, Data: be16(to.Port())}, {Type: ctaNATPortMax, Data: be16(to.Port())}}},
	}}
}

func u32(typ uint16, v uint32) netfilter.Attribute {
	return netfilter.Attribute{Type: typ, Data: binary.BigEndian.AppendUint32(nil, v)}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// Reread reads flows from conntrack again, through one socket: those still open, as they are
// now.
func (t *Table) Reread(flows []Flow) ([]Flow, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	var out []Flow
	for _, f := range flows {
		got, err := c.Get(conntrack.NewFlow(f.Protocol, 0, f.Client.Addr(), f.VIP.Addr(), f.Client.Port(), f.VIP.Port(), 0, 0))
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("conntrack: %w", err)
		}
		if got.Mark&markMask == t.tag && !ended(&got) {
			out = append(out, flowOf(&got))
		}
	}
	return out, nil
}
