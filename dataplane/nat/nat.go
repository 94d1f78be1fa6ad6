// Package nat carries listeners in the kernel: nftables rules pick a member for the first
// packet of a flow (a UDP datagram, a TCP SYN) and DNAT it, and conntrack carries the rest of
// the flow both ways, as Octavia's amphorae hand UDP listeners to LVS rather than to HAProxy.
// No byte crosses into user space and a TCP connection is set up once, end to end, so a flow
// costs what the kernel's forwarding costs. While an agent restarts, the listeners its proxy
// carried are handed to the kernel the same way (handoff.go).
//
// Everything lives in one table of its own (inet family). Only the first packet of a flow
// walks the NAT chains; later packets only hit the counting chain, one map lookup each.
//
//	nat_pre, nat_out  (priority dstnat) listener match -> goto l<id>
//	  l<id>  the listener's ct timeout; allowed sources -> goto s<id>, else count an error and drop
//	  s<id>  over the connection limit: drop; no member: drop; else the algorithm's map
//	         p<id> -> goto m<id>
//	  m<id>  ct mark = member, count a flow, dnat to the member
//	nat_post (priority srcnat)          our flows leaving by another interface than lo: snat to the VIP
//	count_pre, count_out (filter)       ct mark -> jump c<id>: bytes in (original) or out (reply)
//	syn_raw (prerouting, raw)           a flooded listener's SYNs: untracked, untranslated (synproxy.go)
//	syn_in (input, filter)              a flooded listener's SYNs and their cookies' ACKs: synproxy
//
// What is built for a listener is named <kind><id>_<n>, n the Apply that built it, and stays
// until the listener changes. Counters (e, y, i, o, n) are named <kind><id> and live as long
// as their listener or member, so metrics carry on across changes.
package nat

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/model"
)

// A flow's conntrack mark is the table's tag in the top byte and its member's id below, so
// flows of a table are told apart from other users of ct marks (and from another table's),
// and counted and ended by member.
const (
	markMask = 0xff000000
	maxID    = 1<<24 - 1
)

// connlimitOver inverts connlimit: it matches above the count (NFT_CONNLIMIT_F_INV).
const connlimitOver = 1

// hashSeed is the same on every node, so SOURCE_IP sends a client to the same member
// whichever node holds the VIP.
const hashSeed = 0x4c344c42

// Listener is a listener for the kernel to carry, UDP or TCP.
type Listener struct {
	Key string
	// Protocol is model.UDP (also when empty) or model.TCP.
	Protocol     model.Protocol
	Address      netip.AddrPort
	AllowedCIDRs []netip.Prefix
	// ConnectionLimit caps the listener's flows; more are dropped (0: no cap).
	ConnectionLimit int
	// Timeout ends a flow idle this long (the listener's data timeouts): a UDP flow in any
	// state, a TCP connection once established (0: conntrack's own timeouts).
	Timeout time.Duration
	// ConnectTimeout ends a TCP connection whose member has not answered its SYN for this
	// long (timeoutMemberConnect), so the client's next SYN picks again (0: conntrack's).
	ConnectTimeout time.Duration
	Algorithm      model.Algorithm
	Members        []Member
	// SynProxy lets the SYN proxy answer a TCP listener's SYNs while it is flooded
	// (synproxy.go, Table.Flood); never with a ConnectionLimit.
	SynProxy bool
}

// Member is one back-end of a listener.
type Member struct {
	// Key names the member across Applies: its counters and flows follow it.
	Key     string
	Address netip.AddrPort
	// Weight is the member's share of new flows; 0 gives it none, and its flows continue
	// (draining, or a backup while primaries serve).
	Weight int
	// Down takes no new flow (failed monitor or adminStateUp false). A UDP member's flows
	// end at once, so the clients' next datagrams pick another member, as the proxy moves its
	// sessions; TCP connections continue, as HAProxy keeps a session on a server marked down.
	Down bool
}

// serves reports whether m takes new connections.
func serves(m Member) bool { return !m.Down && m.Weight > 0 }

// Node is what decides whether the kernel reaches a listener's members from this node: its
// network namespace's addresses and whether it forwards. Read it once for all the listeners
// of an Apply: read for each listener, it was a large share of an agent's CPU with many
// listeners (docs/benchmarks.md, "Scale").
type Node struct {
	own     map[netip.Addr]bool
	forward [2]bool // IPv4, IPv6
}

// ReadNode reads the calling thread's network namespace.
func ReadNode() Node {
	n := Node{own: map[netip.Addr]bool{}}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				n.own[p.Addr().Unmap()] = true
			}
		}
	}
	for i, path := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		b, err := os.ReadFile(path)
		n.forward[i] = err == nil && len(b) > 0 && b[0] == '1'
	}
	return n
}

// Eligible reports whether the kernel can carry l with every setting honoured; when it cannot
// (LEAST_CONNECTIONS needs connection counts at the moment of choice, session persistence a
// table with its own timeout, the PROXY protocol and timeoutTCPInspect the connection's
// bytes), the proxy carries it.
func (n Node) Eligible(l model.Listener) bool {
	switch l.Protocol {
	case model.UDP:
	case model.TCP:
		if l.TimeoutTCPInspect > 0 || (l.Pool != nil && l.Pool.Protocol != model.PoolTCP) {
			return false
		}
	default:
		return false
	}
	if l.ConnectionLimit == 0 {
		// connectionLimit 0 admits nothing (Octavia's "the maximum number of connections
		// permitted"): the proxy refuses each at once, where a table's 0 is no cap.
		return false
	}
	if l.Pool == nil {
		return true
	}
	if l.Pool.Persistence != nil {
		return false
	}
	switch l.Pool.Algorithm {
	case model.RoundRobin, model.SourceIP, model.SourceIPPort:
	default:
		return false
	}
	return n.Reaches(l)
}

// Reaches reports whether the kernel can take l's flows to its members: members elsewhere
// are reached by forwarding, which a node without it would drop; and a member on one of the
// node's own addresses (a NodePort, as cloud-provider-openstack makes members of nodes) is
// left to the proxy, since kube-proxy's own translation of that address would never run: a
// connection is translated once per hook, and this table's translation would come first.
func (n Node) Reaches(l model.Listener) bool {
	if l.Pool == nil {
		return true
	}
	for _, m := range l.Pool.Members {
		a := m.Address.Addr().Unmap()
		if a.IsLoopback() {
			continue
		}
		if n.own[a] {
			return false
		}
		i := 0
		if a.Is6() {
			i = 1
		}
		if !n.forward[i] {
			return false
		}
	}
	return true
}

// Counts are a member's traffic through the kernel. Bytes are payloads, as the proxy counts
// them: exact for datagrams; for TCP, packets less their headers, taken as 32 bytes of TCP
// header (Linux sends timestamps) over the IP header, so a few bytes off per connection.
type Counts struct {
	BytesIn, BytesOut uint64 // from clients to the member, and back
	Flows             uint64 // flows started
	Active            int    // flows open now
	// HalfOpen are TCP connections the member answered and the client has not (conntrack's
	// SYN_RECV): a SYN flood's, from sources that never answer (synproxy.go).
	HalfOpen int
}

// flowKind is what a member's flows are: their protocol, and the header bytes each of their
// packets carries besides the payload.
type flowKind struct {
	protocol model.Protocol
	header   uint64
}

// DefaultTag marks the agent's flows ('L').
const DefaultTag = 0x4c

// carried is what the table holds for one listener: its spec as applied and what was built
// for it, left as it is while the spec stays.
type carried struct {
	spec                   Listener
	gen                    uint64 // the Apply that built it: its objects' names end in it
	chains, sets, timeouts []string
	counters               []string // of members and listeners gone; only in Table.retired
}

// Table is the nftables table carrying the listeners given to Apply.
type Table struct {
	mu    sync.Mutex
	tag   uint32 // in the top byte of a ct mark
	conn  *nftables.Conn
	table *nftables.Table
	base  []*nftables.Chain // the hooked chains, by role
	// hooked: the hooked chains are in the kernel.
	hooked bool
	// ids of listeners and members, stable across Applies so counters carry on.
	listenerIDs map[string]uint32
	memberIDs   map[string]uint32 // by listener key and member key
	nextID      uint32
	fresh       map[uint32]bool     // ids given in this Apply: their counters are made
	flowsOf     map[uint32]flowKind // by member id: what its flows are
	carried     map[string]*carried // by listener key; nil before the first Apply
	building    *carried            // the listener being built: it owns what is added
	counted     string              // the counted map's name ("": none)
	gen         uint64              // Applies so far
	retired     carried             // what the last Apply replaced, removed by the next
	last        []Listener          // what the last Apply was given
	closed      bool                // Close was called: nothing is programmed any more
	claim       *os.File            // the lock that holds the tag (OpenClaimed), or nil
	noSynproxy  bool                // the kernel has no SYN proxy (synproxy.go)
	expire      time.Duration       // Expire's; 0: never
	until       *nftables.Set       // the set whose one element times out at the end (Expire)
}

const (
	natPre = iota
	natOut
	natPost
	countPre
	countOut
	synIn
	synRaw
)

// Open creates (or takes over) the table name, whose flows carry tag in their conntrack
// marks (two tables in one network namespace need two tags); it fails where nftables cannot
// be programmed (no CAP_NET_ADMIN, no nf_tables).
func Open(name string, tag uint8) (*Table, error) {
	conn, err := nftables.New(nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return nil, err
	}
	t := &Table{tag: uint32(tag) << 24, conn: conn, table: &nftables.Table{Name: name, Family: nftables.TableFamilyINet},
		listenerIDs: map[string]uint32{}, memberIDs: map[string]uint32{}, nextID: 1, flowsOf: map[uint32]flowKind{}}
	// A table left by an agent that died is replaced whole: its ids mean nothing to us.
	conn.AddTable(t.table)
	conn.DelTable(t.table)
	conn.AddTable(t.table)
	hook := func(name string, h *nftables.ChainHook, p *nftables.ChainPriority, typ nftables.ChainType) {
		t.base = append(t.base, &nftables.Chain{Name: name, Table: t.table, Hooknum: h, Priority: p, Type: typ})
	}
	hook("nat_pre", nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT)
	hook("nat_out", nftables.ChainHookOutput, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT)
	hook("nat_post", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT)
	hook("count_pre", nftables.ChainHookPrerouting, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	hook("count_out", nftables.ChainHookOutput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	hook("syn_in", nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	hook("syn_raw", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, nftables.ChainTypeFilter)
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("nftables table %s: %w", name, err)
	}
	t.noSynproxy = !t.takesSynproxy()
	// Flows of an earlier run keep their members (conntrack holds them); new ids start
	// after theirs so the two are never counted or ended together.
	open, err := t.openFlows(false)
	if err != nil {
		return nil, err
	}
	for mark := range open {
		t.nextID = max(t.nextID, mark&^markMask+1)
	}
	return t, nil
}

// Expire makes the table start flows for d from its first Apply, and no more after that
// (the flows it started go on): the kernel ends it by itself, with no process left to. Set
// before the first Apply. A hand-off table uses it: if no agent comes to take it over, the
// node stops answering for the listeners rather than serve frozen members forever.
func (t *Table) Expire(d time.Duration) { t.expire = d }

// addExpiry makes the set whose one element times out at the end (once), and the rules that
// send a new flow past the listeners when it is gone (first in the NAT chains, which only a
// flow's first packet walks).
func (t *Table) addExpiry(c *nftables.Conn) error {
	one := binaryutil.NativeEndian.PutUint32(1)
	if t.until == nil {
		set := &nftables.Set{Table: t.table, Name: "until", KeyType: nftables.TypeMark, HasTimeout: true}
		if err := c.AddSet(set, []nftables.SetElement{{Key: one, Timeout: t.expire}}); err != nil {
			return err
		}
		t.until = set
	}
	for _, b := range []int{natPre, natOut} {
		t.rule(t.base[b], &expr.Immediate{Register: 1, Data: one},
			&expr.Lookup{SourceRegister: 1, SetName: t.until.Name, SetID: t.until.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictReturn})
	}
	return nil
}

// bigBuffers lets a whole Apply go in one transaction, as nft does: the kernel takes a batch
// in one write, which must fit the socket's send buffer (a Maglev table is megabytes).
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 64<<20); e != nil {
				serr = e
			}
		}
	})
	return errors.Join(err, serr)
}

// Name is the nftables table's name.
func (t *Table) Name() string { return t.table.Name }

// Close removes the table and ends the flows it started. (Flows cannot outlive it reliably:
// the kernel drops NAT translations when the last NAT chain of a namespace goes, as ours is
// on a node without kube-proxy.) Nothing is programmed after Close, not even by Repair.
func (t *Table) Close() error { return t.close(false) }

// Leave removes the table as Close does, but leaves the flows it started to conntrack, for
// an agent that handed its listeners to the kernel (handoff.go): its TCP connections keep
// their members while the hand-off table's NAT chains, then the next agent's, keep the
// kernel translating.
func (t *Table) Leave() error { return t.close(true) }

func (t *Table) close(keepFlows bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.conn.AddTable(t.table) // so that deleting it cannot fail
	t.conn.DelTable(t.table)
	err := t.conn.Flush()
	if !keepFlows {
		// Every flow of the tag: also those of removed members, still draining.
		err = errors.Join(err, t.endFlows(map[uint32]bool{0: true}, markMask))
	}
	if t.claim != nil {
		t.claim.Close() // the tag is free for the next instance
	}
	return err
}

// Apply makes the table carry exactly ls, in one transaction: a packet sees the old rules or
// the new ones. Flows already going keep their member (conntrack holds their translation)
// unless their member is Down or their listener is gone.
//
// If the kernel refuses the transaction, Apply finds the listeners it refuses (a module
// missing for one of their settings, say) and carries the others: the error is then a
// *RefusedError naming them. Any other error leaves the table as the last Apply left it.
func (t *Table) Apply(ls []Listener) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("nftables table closed")
	}
	// The agent applies its whole model after any change in the cluster: a listener's
	// chains stay while it stays the same, so its round robin keeps its turn (numgen counts
	// in the rule) and its Maglev table is not sent again.
	if t.carried != nil && len(ls) == len(t.carried) && slices.IndexFunc(ls, t.changed) < 0 {
		return nil
	}
	return t.applyEach(ls)
}

// applyEach programs ls, or as much of it as the kernel takes (see Apply).
func (t *Table) applyEach(ls []Listener) error {
	err := t.apply(ls)
	if err == nil {
		return nil
	}

	// What the table carries unchanged it can carry again; the changed listeners are then
	// tried one at a time (each transaction builds only the one it adds).
	carried := slices.DeleteFunc(slices.Clone(ls), t.changed)
	if t.apply(carried) != nil {
		return err // nothing to single out: the kernel refuses even what it ran
	}
	refused := &RefusedError{Listeners: map[string]error{}}
	for _, l := range ls {
		if !t.changed(l) {
			continue
		}
		if err := t.apply(append(carried, l)); err != nil {
			refused.Listeners[l.Key] = err
			continue
		}
		carried = append(carried, l)
	}
	if len(refused.Listeners) == 0 {
		return nil // each went in on its own: the first failure was passing
	}
	return refused
}

// RefusedError names the listeners the kernel would not take, each with its error; the
// table carries the others.
type RefusedError struct {
	Listeners map[string]error
}

func (e *RefusedError) Error() string {
	if len(e.Listeners) == 0 {
		return "the kernel refuses no listener"
	}
	keys := slices.Sorted(maps.Keys(e.Listeners))
	return fmt.Sprintf("the kernel refuses listeners %s: %v", strings.Join(keys, ", "), e.Listeners[keys[0]])
}

// apply programs ls; when the kernel refuses the transaction, nothing of it took effect, and
// the table's books go back to what the kernel still runs.
func (t *Table) apply(ls []Listener) error {
	before := t.books()
	end, err := t.program(ls)
	if err != nil {
		t.restore(before)
		return err
	}
	t.last = make([]Listener, len(ls))
	for i, l := range ls {
		t.last[i] = deepCopy(l)
	}
	return t.endFlows(end, 0xffffffff)
}

// books is what the table knows of what the kernel holds, as program changes it.
type books struct {
	listenerIDs, memberIDs map[string]uint32
	nextID                 uint32
	flowsOf                map[uint32]flowKind
	carried                map[string]*carried
	counted                string
	retired                carried
	hooked                 bool
}

func (t *Table) books() books {
	return books{maps.Clone(t.listenerIDs), maps.Clone(t.memberIDs), t.nextID, maps.Clone(t.flowsOf),
		maps.Clone(t.carried), t.counted, t.retired, t.hooked}
}

func (t *Table) restore(b books) {
	t.listenerIDs, t.memberIDs, t.nextID, t.flowsOf = b.listenerIDs, b.memberIDs, b.nextID, b.flowsOf
	t.carried, t.counted, t.retired, t.hooked = b.carried, b.counted, b.retired, b.hooked
	t.building = nil
}

// Repair programs the last Apply again if the table lost any of its chains (someone ran
// `nft flush ruleset`, say): Apply changes nothing while its input stays the same, so
// without this the kernel listeners would stay dark. It reports whether it repaired; a
// *RefusedError names listeners the kernel no longer takes, as from Apply.
func (t *Table) Repair() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.carried == nil || t.closed {
		return false, nil
	}
	chains, err := t.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	have := map[string]bool{}
	for _, c := range chains {
		if c.Table.Name == t.table.Name {
			have[c.Name] = true
		}
	}
	intact := !t.hooked || !slices.ContainsFunc(t.base, func(b *nftables.Chain) bool { return !have[b.Name] })
	for _, cl := range t.carried {
		intact = intact && !slices.ContainsFunc(cl.chains, func(name string) bool { return !have[name] })
	}
	if intact {
		return false, nil
	}
	t.reset()
	return true, t.applyEach(t.last)
}

// program sends the transaction that makes the table carry ls, and returns the members
// whose flows must end.
func (t *Table) program(ls []Listener) (map[uint32]bool, error) {
	// A connection of its own: messages queued before an error go with it.
	c, err := nftables.New(nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return nil, err
	}
	t.conn = c
	t.gen++
	// Rules go first (they hold the chains and objects), then what only they used.
	if t.hooked {
		for _, b := range t.base {
			c.FlushChain(b)
		}
	}
	// What the last Apply replaced goes now, not then: a datagram that entered the old rules
	// as that transaction committed could otherwise find its listener's map deleted under it
	// and leave without a member (docs/benchmarks.md, "Design choices measured"). New objects
	// get new names, so old and new never share one.
	t.retired.remove(c, t.table)
	t.retired = carried{}
	if t.counted != "" {
		t.retired.sets = append(t.retired.sets, t.counted)
		t.counted = ""
	}
	want := map[string]Listener{}
	for _, l := range ls {
		want[l.Key] = l
	}
	for key, cl := range t.carried {
		if l, ok := want[key]; ok && !t.changed(l) {
			continue
		}
		t.retired.chains = append(t.retired.chains, cl.chains...)
		t.retired.sets = append(t.retired.sets, cl.sets...)
		t.retired.timeouts = append(t.retired.timeouts, cl.timeouts...)
		delete(t.carried, key)
	}
	t.fresh = map[uint32]bool{}
	// The hooked chains exist only while there are listeners: NAT chains turn on conntrack
	// for every packet of the network namespace, which a node without kernel listeners
	// should not pay for.
	hooked := len(ls) > 0
	for _, b := range t.base {
		switch {
		case hooked && !t.hooked:
			c.AddChain(b)
		case !hooked && t.hooked:
			c.DelChain(b)
		}
	}

	var flooded *nftables.Set
	if hooked {
		if flooded, err = t.addFlooded(); err != nil {
			return nil, err
		}
	}
	if hooked && t.expire > 0 {
		if err := t.addExpiry(c); err != nil {
			return nil, err
		}
	}
	var mss map[bool]uint16 // by IPv6, read once
	synproxyMSS := func(ipv6 bool) uint16 {
		if mss == nil {
			mss = map[bool]uint16{false: linkMSS(false), true: linkMSS(true)}
		}
		return mss[ipv6]
	}
	if slices.ContainsFunc(ls, t.synproxied) {
		t.synproxyGates()
	}
	keptListeners, keptMembers := map[string]uint32{}, map[string]uint32{}
	end := map[uint32]bool{}
	rebuilt := map[string]*carried{}
	var countedElems []nftables.SetElement
	for _, l := range ls {
		lid, err := t.id(t.listenerIDs, l.Key)
		if err != nil {
			return nil, err
		}
		keptListeners[l.Key] = lid
		build := t.carried[l.Key] == nil
		if build {
			t.building = &carried{spec: deepCopy(l), gen: t.gen}
			rebuilt[l.Key] = t.building
			t.addListener(l, lid)
		}
		gen := t.gen
		if !build {
			gen = t.carried[l.Key].gen
		}
		if t.synproxied(l) {
			t.synproxyRules(l, lid, flooded, synproxyMSS(l.Address.Addr().Unmap().Is6()))
		}
		for _, b := range []int{natPre, natOut} {
			t.rule(t.base[b], append(match(l), &expr.Verdict{Kind: expr.VerdictGoto, Chain: built("l", lid, gen)})...)
		}
		var serving []Member
		var ids []uint32
		for _, m := range l.Members {
			k := l.Key + "\x00" + m.Key
			mid, err := t.id(t.memberIDs, k)
			if err != nil {
				return nil, err
			}
			keptMembers[k] = mid
			countedElems = append(countedElems, nftables.SetElement{
				Key: binaryutil.NativeEndian.PutUint32(t.tag | mid), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: built("c", mid, gen)}})
			if !build {
				continue
			}
			t.addMember(l, m, mid)
			if m.Down {
				if l.Protocol != model.TCP {
					end[mid] = true
				}
			} else if serves(m) {
				serving = append(serving, m)
				ids = append(ids, mid)
			}
		}
		if build {
			if err := t.addSelection(l, lid, serving, ids); err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.Key, err)
			}
		}
	}
	t.building = nil
	// Counted flows of members we still know of; a removed member's flows drain uncounted.
	if len(countedElems) > 0 {
		counted, err := t.addMap(fmt.Sprintf("counted_%d", t.gen), nftables.TypeMark, countedElems)
		if err != nil {
			return nil, err
		}
		t.counted = counted.Name
		for _, b := range []*nftables.Chain{t.base[countPre], t.base[countOut]} {
			var e []expr.Any
			if b == t.base[countOut] { // a local client's packets to a local member come back in by lo: counted there
				e = oifNotLo()
			}
			e = append(e, &expr.Ct{Register: 1, Key: expr.CtKeyMARK}, &expr.Lookup{SourceRegister: 1, SetName: counted.Name, SetID: counted.ID, DestRegister: 0, IsDestRegSet: true})
			c.AddRule(&nftables.Rule{Table: t.table, Chain: b, Exprs: e})
		}
	}
	// Our flows to members elsewhere leave with the VIP as their source, so replies come back
	// through whichever node holds the VIP: this one, or after a move the one that took it,
	// which carries the flow on (standby.go). (LVS in Octavia's amphora is paired with SNAT.)
	if hooked {
		for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
			c.AddRule(&nftables.Rule{Table: t.table, Chain: t.base[natPost], Exprs: t.snatToVIP(fam)})
		}
	}

	// Objects of members and listeners that are gone.
	for k, id := range t.memberIDs {
		if _, ok := keptMembers[k]; !ok {
			for _, p := range []string{"i", "o", "n"} { // once the retired chains naming them are gone
				t.retired.counters = append(t.retired.counters, chain(p, id))
			}
			// A removed UDP listener's flows end; a TCP connection goes on to its end, as
			// the proxy's connections outlive their listener.
			if _, listenerKept := keptListeners[listenerOf(k)]; !listenerKept && t.flowsOf[id].protocol != model.TCP {
				end[id] = true
			}
		}
	}
	for k, id := range t.listenerIDs {
		if _, ok := keptListeners[k]; !ok {
			t.retired.counters = append(t.retired.counters, chain("e", id), chain("y", id))
		}
	}
	if !hooked {
		// No hook leads to them, so no datagram can be on its way through them; and their
		// NAT and ct expressions would keep conntrack on until the next change.
		t.retired.remove(c, t.table)
		t.retired = carried{}
		if t.hooked { // once no rule names it
			c.DelSet(&nftables.Set{Table: t.table, Name: floodedSet})
		}
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t.listenerIDs, t.memberIDs, t.hooked = keptListeners, keptMembers, hooked
	if t.carried == nil {
		t.carried = map[string]*carried{}
	}
	maps.Copy(t.carried, rebuilt)
	kept := map[uint32]bool{}
	for _, id := range keptMembers {
		kept[id] = true
	}
	maps.DeleteFunc(t.flowsOf, func(id uint32, _ flowKind) bool { return !kept[id] })
	return end, nil
}

// remove deletes what cl holds: its chains' rules (which name its sets and chains), its sets
// (whose verdicts name its chains), its chains, its ct timeouts.
func (cl *carried) remove(c *nftables.Conn, t *nftables.Table) {
	for _, name := range cl.chains {
		c.FlushChain(&nftables.Chain{Name: name, Table: t})
	}
	for _, name := range cl.sets {
		c.DelSet(&nftables.Set{Table: t, Name: name})
	}
	for _, name := range cl.chains {
		c.DelChain(&nftables.Chain{Name: name, Table: t})
	}
	for _, name := range cl.timeouts {
		c.DeleteObject(&nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCtTimeout})
	}
	for _, name := range cl.counters {
		c.DeleteObject(counter(t, name))
	}
}

// changed reports whether l differs from what the table carries under its key.
func (t *Table) changed(l Listener) bool {
	cl := t.carried[l.Key]
	return cl == nil || !reflect.DeepEqual(cl.spec, l)
}

// deepCopy copies l with its slices, which the caller may change after Apply.
func deepCopy(l Listener) Listener {
	l.Members, l.AllowedCIDRs = slices.Clone(l.Members), slices.Clone(l.AllowedCIDRs)
	return l
}

// reset empties the table after a failed transaction, so the next Apply starts clean.
func (t *Table) reset() {
	if c, err := nftables.New(nftables.WithSockOptions(bigBuffers)); err == nil {
		t.conn = c
	}
	t.conn.AddTable(t.table) // so that deleting it cannot fail
	t.conn.DelTable(t.table)
	t.conn.AddTable(t.table)
	_ = t.conn.Flush()
	t.listenerIDs, t.memberIDs, t.carried = map[string]uint32{}, map[string]uint32{}, nil
	t.hooked, t.counted, t.building, t.retired = false, "", nil, carried{}
}

// listenerOf is the listener key in a member id's key (listener key, NUL, member key).
func listenerOf(memberKey string) string {
	l, _, _ := strings.Cut(memberKey, "\x00")
	return l
}

func (t *Table) id(ids map[string]uint32, key string) (uint32, error) {
	if id, ok := ids[key]; ok {
		return id, nil
	}
	if t.nextID > maxID {
		return 0, errors.New("out of flow marks; restart the agent")
	}
	id := t.nextID
	t.nextID++
	ids[key] = id
	t.fresh[id] = true
	return id, nil
}
