package nat

import (
	"bytes"
	"net"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// SYN cookies in front of the translation. A SYN the kernel path translates costs a conntrack
// entry, a member's SYN-ACK and the trip both ways, which a SYN flood from spoofed sources
// multiplies (docs/benchmarks.md, "SYN flood"). While a listener is flooded (Flood: its agent
// counts too many connections its members answered and their clients did not, as a stack
// turns to SYN cookies when a listener's backlog is full), the node answers its SYNs itself
// with a SYN cookie (nftables' synproxy); only a client whose ACK carries a valid cookie gets
// a flow, which the synproxy opens with a SYN of its own through the listener's usual rules
// (nat_out). So the flood costs neither an entry nor a member's answer; otherwise nothing
// changes.
//
//	syn_raw   (prerouting, before conntrack) a SYN of a flooded listener from an allowed
//	          source, while it has members to serve: count it (y<id>), untrack it (so no NAT
//	          chain sees it); a SYN it refuses goes on to be refused by its rules as ever
//	syn_in    (input, the VIP being local) a flooded listener's untranslated SYN, and an ACK
//	          that opens no known flow (the cookie's answer): synproxy
//	nat_out   the synproxy's own SYN (sent from the node with the client's address): label
//	          the flow (proxiedLabel), then the listener's rules as for any SYN
//
// Untracked, a flood's SYN costs conntrack no lookup, no entry and no NAT binding, as in the
// synproxy's usual recipe (nft(8), "SYNPROXY"). Only SYNs that come in by an interface: a
// local client's go through nat_out to a member, and the synproxy's own SYN with them.
//
// The client's ACK is matched as a new flow (conntrack picks connections up mid-stream, as
// nf_conntrack_tcp_loose is left as the node has it) or an invalid one; while a listener is
// not flooded, such packets go on to the node's stack as before.
//
// The synproxy numbers the client's side of a connection from its cookie and the member's
// from the member's own SYN-ACK: conntrack shifts every later segment's sequence numbers
// between the two, and a node that carries the connection on after a VIP move
// needs the same shifts (Flow.SynProxy). Conntrack's event for a new flow comes before the
// member answers and names no shift; the label tells the watch which flows to read again
// once it is known (Table.Reread).

// floodedFor is how long a listener stays flooded once Flood said so: its half-open
// connections are gone by then (they time out after timeoutMemberConnect), so only a flood
// that goes on makes its agent say so again.
const floodedFor = time.Minute

const floodedSet = "flooded"

// proxiedLabel is the conntrack label (of 128) that marks a flow the synproxy set up: the
// last, far from the first ones other users of labels (Open vSwitch, say) number theirs from.
const proxiedLabel = 127

// labelled reports whether labels (CTA_LABELS: the bitmap's bytes, bit n in byte n/8) have
// proxiedLabel.
func labelled(labels []byte) bool {
	return len(labels) > proxiedLabel/8 && labels[proxiedLabel/8]&(1<<(proxiedLabel%8)) != 0
}

// addFlooded adds the set of the listeners flooded now (Flood).
func (t *Table) addFlooded() (*nftables.Set, error) {
	s := &nftables.Set{Table: t.table, Name: floodedSet, KeyType: nftables.TypeInteger,
		KeyByteOrder: binaryutil.NativeEndian, HasTimeout: true}
	return s, t.conn.AddSet(s, nil)
}

// Flood makes the SYN proxy answer the SYNs of the listeners keys (those with SynProxy) for
// floodedFor from now.
func (t *Table) Flood(keys []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.hooked || t.closed {
		return nil
	}
	var elems []nftables.SetElement
	for _, k := range keys {
		if cl := t.carried[k]; cl != nil && t.synproxied(cl.spec) {
			elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(t.listenerIDs[k]), Timeout: floodedFor})
		}
	}
	if len(elems) == 0 {
		return nil
	}
	set := &nftables.Set{Table: t.table, Name: floodedSet, KeyType: nftables.TypeInteger, HasTimeout: true}
	// Adding an element that is there leaves its timeout as it was: those there are
	// deleted and added again, in the same transaction.
	there, err := t.conn.GetSetElements(set)
	if err != nil {
		return err
	}
	var renew []nftables.SetElement
	for _, e := range there {
		if slices.ContainsFunc(elems, func(n nftables.SetElement) bool { return bytes.Equal(n.Key, e.Key) }) {
			renew = append(renew, nftables.SetElement{Key: e.Key})
		}
	}
	if len(renew) > 0 {
		if err := t.conn.SetDeleteElements(set, renew); err != nil {
			return err
		}
	}
	if err := t.conn.SetAddElements(set, elems); err != nil {
		return err
	}
	return t.conn.Flush()
}

// synproxied reports whether l's SYNs may go to the SYN proxy: not where the kernel has none
// (without nft_synproxy it would refuse the listener's rules, and the proxy would carry it;
// SynCookies says so), and not with a connection limit: the limit already bounds
// what a flood takes of the table, and a connection the synproxy accepted could not be
// refused (the client would take the reset the kernel sends for the synproxy's SYN as out of
// its window, and wait).
func (t *Table) synproxied(l Listener) bool {
	return !t.noSynproxy && l.proto() == unix.IPPROTO_TCP && l.SynProxy && l.ConnectionLimit == 0
}

// SynCookies reports whether the kernel has the SYN proxy: without it, the listeners are
// carried with no SYN cookies.
func (t *Table) SynCookies() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.noSynproxy
}

// takesSynproxy asks the kernel whether it takes a synproxy expression, by a transaction
// that adds a chain with one and removes it.
func (t *Table) takesSynproxy() bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	ch := c.AddChain(&nftables.Chain{Name: "synproxy_probe", Table: t.table})
	c.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: []expr.Any{&expr.SynProxy{Mss: 1460, MssValueSet: true}}})
	if refuseSynproxy {
		c.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "missing"}}})
	}
	c.FlushChain(ch)
	c.DelChain(ch)
	return c.Flush() == nil
}

// refuseSynproxy makes the kernel refuse a synproxy expression and the SYN proxy's rules, as
// one without nft_synproxy does (set by tests only, in export_test.go).
var refuseSynproxy bool

// synproxyRules adds l's rules to syn_in and nat_out (see above); mss is what the synproxy
// announces for l's family.
func (t *Table) synproxyRules(l Listener, lid uint32, flooded *nftables.Set, mss uint16) {
	key := &expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(lid)}
	// Without timestamps, so the cookie carries no window scale or SACK either, as a stack's
	// SYN cookies without timestamps: a connection set up by it has none of the three, end to
	// end (at most 64 KiB in flight). With timestamps it would shift the member's, and a node
	// taking the VIP over could not shift them the same: conntrack's netlink interface
	// restores a flow's sequence shift but not the synproxy's timestamp shift, and the client
	// would drop the member's segments as old (PAWS). So connections set up in a flood survive
	// a move, at the cost of their window on long, fast paths.
	proxy := &expr.SynProxy{Mss: mss, MssValueSet: true}
	isFlooded := &expr.Lookup{SourceRegister: 1, SetName: flooded.Name, SetID: flooded.ID}
	// The synproxy's SYN has the client's address, which is not the node's (a client on the
	// node has one of its own), and no other packet to the listener leaves the node's stack
	// with another's address.
	label := make([]byte, 16)
	label[proxiedLabel/8] = 1 << (proxiedLabel % 8)
	t.rule(t.base[natOut], append(match(l),
		&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagSADDR: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Immediate{Register: 1, Data: label},
		&expr.Ct{Register: 1, SourceRegister: true, Key: expr.CtKeyLABELS})...)
	if slices.ContainsFunc(l.Members, serves) { // else the listener refuses its SYNs (s<id>)
		for _, from := range allowedSources(l) {
			t.rule(t.base[synRaw], slices.Concat(match(l), from, []expr.Any{key, isFlooded,
				&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: chain("y", lid)},
				&expr.Notrack{}, &expr.Verdict{Kind: expr.VerdictAccept}})...)
		}
	}
	then := []expr.Any{key, isFlooded, proxy}
	syn := append(match(l), ctState(expr.CtStateBitNEW|expr.CtStateBitUNTRACKED)...)
	t.rule(t.base[synIn], append(syn, then...)...)
	ack := append(matchAddress(l), tcpFlags(flagSYN|flagACK|flagRST, flagACK)...)
	ack = append(ack, ctState(expr.CtStateBitNEW|expr.CtStateBitINVALID)...)
	t.rule(t.base[synIn], append(ack, then...)...)
	if refuseSynproxy {
		t.rule(t.base[synIn], &expr.Verdict{Kind: expr.VerdictJump, Chain: "missing"})
	}
}

// synproxyGates lets packets that no synproxy rule can match out of syn_raw and syn_in at
// their first rule: syn_raw sees every packet the node receives, syn_in every packet to a
// local address (the proxy's connections), and each has rules for every listener.
func (t *Table) synproxyGates() {
	t.rule(t.base[synRaw], &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Verdict{Kind: expr.VerdictAccept})
	t.rule(t.base[synRaw], append(not(tcpFlags(flagSYN|flagACK, flagSYN)), &expr.Verdict{Kind: expr.VerdictAccept})...)
	// What the synproxy takes: a SYN untracked or new, an ACK new or invalid.
	t.rule(t.base[synIn], append(not(ctState(expr.CtStateBitNEW|expr.CtStateBitINVALID|expr.CtStateBitUNTRACKED)),
		&expr.Verdict{Kind: expr.VerdictAccept})...)
}

const (
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// tcpFlags matches a TCP segment whose flags under mask are want.
func tcpFlags(mask, want byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{want}},
	}
}

// not inverts a match that ends in one comparison (tcpFlags, ctState).
func not(e []expr.Any) []expr.Any {
	c := e[len(e)-1].(*expr.Cmp)
	if c.Op == expr.CmpOpEq {
		c.Op = expr.CmpOpNeq
	} else {
		c.Op = expr.CmpOpEq
	}
	return e
}

// ctState matches a packet whose conntrack state is one of states (CtStateBit*).
func ctState(states uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(states), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// linkMSS is the MSS the synproxy announces: what the smallest MTU of the namespace's
// interfaces carries (an OpenStack tenant network's 1450, say; at most Ethernet's 1500), less
// the IP and TCP headers, as a member behind it would announce.
func linkMSS(ipv6 bool) uint16 {
	mtu := 1500
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 && i.MTU >= 1280 && i.MTU < mtu {
				mtu = i.MTU
			}
		}
	}
	if ipv6 {
		return uint16(mtu - 60)
	}
	return uint16(mtu - 40)
}
