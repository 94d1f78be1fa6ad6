package nat

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/balancer"
	"github.com/l4lb/l4lb/internal/model"
)

// The expressions each listener and member is built from, and the names they go by.

func chain(prefix string, id uint32) string { return fmt.Sprintf("%s%d", prefix, id) }

// built names an object built for a listener in Apply number gen.
func built(prefix string, id uint32, gen uint64) string {
	return fmt.Sprintf("%s%d_%d", prefix, id, gen)
}

func counter(t *nftables.Table, name string) *nftables.NamedObj {
	return &nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}}
}

func (t *Table) addChain(name string) *nftables.Chain {
	t.building.chains = append(t.building.chains, name)
	return t.conn.AddChain(&nftables.Chain{Name: name, Table: t.table})
}

func (t *Table) rule(ch *nftables.Chain, e ...expr.Any) {
	t.conn.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: e})
}

func (l Listener) proto() byte {
	if l.Protocol == model.TCP {
		return unix.IPPROTO_TCP
	}
	return unix.IPPROTO_UDP
}

// match is the expressions that match the packets that open a listener's flows: a datagram
// to its address and port, or a SYN.
func match(l Listener) []expr.Any {
	e := matchAddress(l)
	if l.proto() == unix.IPPROTO_TCP {
		// Only a SYN opens a flow here. Conntrack may first see a connection the proxy
		// already carries in the middle (nothing tracked before this table hooked NAT in),
		// and would call it new: such a packet must reach the proxy's socket, not a member.
		e = append(e, tcpFlags(flagSYN|flagACK, flagSYN)...)
	}
	return e
}

// matchAddress is the expressions that match a listener's packets: its family, protocol,
// address and port.
func matchAddress(l Listener) []expr.Any {
	a := l.Address.Addr().Unmap()
	fam, daddr := byte(unix.NFPROTO_IPV4), uint32(16)
	if a.Is6() {
		fam, daddr = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l.proto()}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(l.Address.Port())},
	}
}

// addListener adds the listener's ct timeout and the chain that checks the client's address.
func (t *Table) addListener(l Listener, lid uint32) {
	c := t.conn
	fam := byte(unix.NFPROTO_IPV4)
	if l.Address.Addr().Unmap().Is6() {
		fam = unix.NFPROTO_IPV6
	}
	gen := t.building.gen
	timeout := built("t", lid, gen)
	policy := timeouts(l)
	timed := len(policy) > 0
	if timed {
		c.AddObj(&nftables.NamedObj{Table: t.table, Name: timeout, Type: nftables.ObjTypeCtTimeout, Obj: &expr.CtTimeout{
			L3Proto: uint16(fam), L4Proto: uint8(l.proto()), Policy: policy}})
		t.building.timeouts = append(t.building.timeouts, timeout)
	}
	lc := t.addChain(built("l", lid, gen))
	if timed {
		// Set on the flow's first packet, before conntrack confirms the flow (the kernel
		// ignores it on a confirmed flow, and has no flow yet at the raw priority).
		t.rule(lc, &expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: timeout})
	}
	if t.fresh[lid] {
		c.AddObj(counter(t.table, chain("e", lid)))
		c.AddObj(counter(t.table, chain("y", lid)))
	}
	sc := t.addChain(built("s", lid, gen)).Name
	for _, from := range allowedSources(l) {
		t.rule(lc, append(from, &expr.Verdict{Kind: expr.VerdictGoto, Chain: sc})...)
	}
	t.rule(lc, refused(l, lid)...)
	if refuse != nil && refuse(l) {
		t.rule(lc, &expr.Verdict{Kind: expr.VerdictJump, Chain: "missing"})
	}
}

// allowedSources is the expressions that match l's allowed sources, one list per prefix (a
// rule each), or one empty list if l allows every source.
func allowedSources(l Listener) [][]expr.Any {
	if len(l.AllowedCIDRs) == 0 {
		return [][]expr.Any{nil}
	}
	a := l.Address.Addr().Unmap()
	saddr, n := uint32(12), uint32(4)
	if a.Is6() {
		saddr, n = 8, 16
	}
	var from [][]expr.Any
	for _, p := range l.AllowedCIDRs {
		// As model.Listener.Allowed: a prefix of the other family matches nothing.
		p = p.Masked()
		if p.Addr().Is6() != a.Is6() {
			continue
		}
		from = append(from, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: n},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: prefixMask(p.Bits(), int(n)), Xor: make([]byte, n)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
		})
	}
	return from
}

// timeWait is how long conntrack keeps a kernel-path TCP connection after it ended, where
// its own default is 120 s (twice RFC 793's maximum segment lifetime). An ended connection's
// entry only catches its last retransmitted segments, which within a data centre arrive in
// milliseconds, and a client that opens the same connection again replaces it either way;
// but kept two minutes, ended connections are most of a node's table when its clients make
// short connections (docs/metrics.md, "Sizing"), and most of what each read of the table
// reads. Cilium keeps a closing connection 10 s (its bpf-ct-timeout-regular-tcp-fin).
const timeWait = 10 * time.Second

// timeouts is the conntrack timeout policy of l's flows: the states it sets (the others keep
// conntrack's defaults), or none.
func timeouts(l Listener) expr.CtStatePolicyTimeout {
	secs := func(d time.Duration) uint32 { return uint32(max(1, d/time.Second)) }
	p := expr.CtStatePolicyTimeout{}
	if l.proto() == unix.IPPROTO_UDP {
		if l.Timeout > 0 {
			p[expr.CtStateUDPUNREPLIED], p[expr.CtStateUDPREPLIED] = secs(l.Timeout), secs(l.Timeout)
		}
		return p
	}
	p[expr.CtStateTCPTIMEWAIT] = secs(timeWait)
	if l.Timeout > 0 {
		p[expr.CtStateTCPESTABLISHED] = secs(l.Timeout)
	}
	if l.ConnectTimeout > 0 {
		// SYN_SENT2 is a simultaneous open: the same wait for the member. SYN_RECV waits for
		// the client's ACK once the member answered: a client answers within a round trip,
		// a SYN flood's spoofed sources never, and conntrack's own wait (60 s) let a modest
		// flood fill the table (docs/benchmarks.md, "SYN flood").
		c := secs(l.ConnectTimeout)
		p[expr.CtStateTCPSYNSENT], p[expr.CtStateTCPSYNSENT2], p[expr.CtStateTCPSYNRECV] = c, c, c
	}
	return p
}

// refuse makes the kernel refuse the listeners it picks, by a jump to a chain that does not
// exist (set by tests only, in export_test.go).
var refuse func(Listener) bool

func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

// refused counts a refused flow on the listener's errors and ends it: a datagram is dropped,
// a SYN answered with a reset, so the client hears at once, as from the proxy.
func refused(l Listener, lid uint32) []expr.Any {
	e := []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: chain("e", lid)}}
	if l.proto() == unix.IPPROTO_TCP {
		return append(e, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	}
	return append(e, &expr.Verdict{Kind: expr.VerdictDrop})
}

// addSelection fills s<lid>: the connection limit, then the algorithm's map over the serving
// members.
func (t *Table) addSelection(l Listener, lid uint32, serving []Member, ids []uint32) error {
	gen := t.building.gen
	sc := &nftables.Chain{Name: built("s", lid, gen), Table: t.table}
	if l.ConnectionLimit > 0 {
		t.rule(sc, append([]expr.Any{&expr.Connlimit{Count: uint32(l.ConnectionLimit), Flags: connlimitOver}}, refused(l, lid)...)...)
	}
	if len(serving) == 0 {
		t.rule(sc, refused(l, lid)...)
		return nil
	}
	bm := make([]balancer.Member, len(serving))
	for i, m := range serving {
		bm[i] = balancer.Member{Key: m.Address.String(), Weight: m.Weight}
	}
	var slots []int32
	var pick []expr.Any
	a := l.Address.Addr().Unmap()
	saddr, n := uint32(12), uint32(4)
	if a.Is6() {
		saddr, n = 8, 16
	}
	switch l.Algorithm {
	case model.RoundRobin:
		slots = balancer.RoundRobinCycle(bm)
		pick = []expr.Any{&expr.Numgen{Register: 1, Modulus: uint32(len(slots)), Type: unix.NFT_NG_INCREMENTAL}}
	case model.SourceIP, model.SourceIPPort:
		slots = balancer.NewMaglev(bm, balancer.DefaultTableSize, false).Table()
		pick = []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: n}}
		length := n
		if l.Algorithm == model.SourceIPPort {
			// The port goes in the 32-bit register after the address, as nft concatenates.
			pick = append(pick, &expr.Payload{DestRegister: unix.NFT_REG32_00 + n/4, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
			length += 4
		}
		pick = append(pick, &expr.Hash{SourceRegister: 1, DestRegister: 1, Length: length, Modulus: uint32(len(slots)), Seed: hashSeed, Type: expr.HashTypeJenkins})
	default:
		return fmt.Errorf("algorithm %s is not carried by the kernel", l.Algorithm)
	}
	elems := make([]nftables.SetElement, len(slots))
	for i, s := range slots {
		elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: built("m", ids[s], gen)}}
	}
	m, err := t.addMap(built("p", lid, gen), nftables.TypeInteger, elems)
	if err != nil {
		return err
	}
	t.rule(sc, append(pick, &expr.Lookup{SourceRegister: 1, SetName: m.Name, SetID: m.ID, DestRegister: 0, IsDestRegSet: true})...)
	return nil
}

// addMap adds a verdict map. Its elements go in messages of a thousand: an attribute holds
// at most 64 KiB, and a Maglev table has 65537 slots.
func (t *Table) addMap(name string, key nftables.SetDatatype, elems []nftables.SetElement) (*nftables.Set, error) {
	m := &nftables.Set{Table: t.table, Name: name, IsMap: true, KeyType: key, DataType: nftables.TypeVerdict,
		KeyByteOrder: binaryutil.NativeEndian}
	if err := t.conn.AddSet(m, nil); err != nil {
		return nil, err
	}
	if t.building != nil { // else the table's own
		t.building.sets = append(t.building.sets, name)
	}
	for chunk := range slices.Chunk(elems, 1000) {
		if err := t.conn.SetAddElements(m, chunk); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// addMember adds m<mid>, which marks, counts and translates a member's new flows, and
// c<mid>, which counts their bytes.
func (t *Table) addMember(l Listener, m Member, mid uint32) {
	c := t.conn
	ip := uint64(20)
	if m.Address.Addr().Unmap().Is6() {
		ip = 40
	}
	t.flowsOf[mid] = flowKind{protocol: l.Protocol, header: ip + transportHeader(l.Protocol)}
	if t.fresh[mid] {
		for _, p := range []string{"i", "o", "n"} {
			c.AddObj(counter(t.table, chain(p, mid)))
		}
	}
	a := m.Address.Addr().Unmap()
	fam := uint32(unix.NFPROTO_IPV4)
	if a.Is6() {
		fam = unix.NFPROTO_IPV6
	}
	gen := t.building.gen
	t.rule(t.addChain(built("m", mid, gen)),
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(t.tag | mid)},
		&expr.Ct{Register: 1, SourceRegister: true, Key: expr.CtKeyMARK},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: chain("n", mid)},
		&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(m.Address.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
	cc := t.addChain(built("c", mid, gen))
	for dir, name := range []string{chain("i", mid), chain("o", mid)} {
		t.rule(cc,
			&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(dir)}},
			&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name})
	}
}

// transportHeader is the bytes of a protocol's header in each packet: UDP's 8; TCP's 20 and
// the 12 of the timestamps option Linux sends on every segment (an estimate: a SYN carries
// more options, a peer without timestamps fewer).
func transportHeader(p model.Protocol) uint64 {
	if p == model.TCP {
		return 32
	}
	return 8
}

func (t *Table) markIsOurs() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(markMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(t.tag)},
	}
}

// snatToVIP translates the source of the table's flows of family fam leaving by another
// interface than lo to their VIP (the destination the client asked for), keeping the port
// where it is free.
func (t *Table) snatToVIP(fam byte) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
	}
	e = append(e, t.markIsOurs()...)
	e = append(e, oifNotLo()...)
	// In an inet table conntrack's address is 16 bytes; an IPv4 one is its first 4.
	return append(e, &expr.Ct{Register: 1, Key: expr.CtKeyDST, Direction: 0},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam), RegAddrMin: 1, RegAddrMax: 1})
}

func oifNotLo() []expr.Any {
	lo := make([]byte, 16)
	copy(lo, "lo")
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: lo},
	}
}
