package vip

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// nfARPIn is the arp family's input hook (linux/netfilter_arp.h: NF_ARP_IN); the library's
// ChainHookInput is the inet families' (1), which is NF_ARP_OUT there.
const nfARPIn = 0

// guard keeps the kernel from answering ARP requests for VIPs: an nftables table of the arp
// family drops requests whose target is in its set, before the kernel's ARP code sees them.
// The agent's own responder reads the requests from a packet socket, which gets them first.
// The table outlives the process, so a node whose agent was SIGKILLed stops answering for
// its VIPs at once: the address stays, the answers do not (issue: two MACs for one VIP).
//
// A VIP handed to the kernel while the agent restarts (Local.Release) is let through for a
// while: its entry in a second set times out in the kernel, so if no agent comes to answer
// for it, the kernel stops answering by itself and another node can take it without two
// answering (the hand-off has an end, even with no process left to end it).
//
// IPv6 needs no guard: Linux answers a neighbour solicitation only for addresses of the
// interface it arrived on, and VIPs are on another one.
type guard struct {
	table       *nftables.Table
	set, handed *nftables.Set
}

func (g *guard) conn() (*nftables.Conn, error) { return nftables.New() }

// openGuard (re)creates the table with exactly addrs in its set, and handed (each with the
// time it is still let through) in the other, in one transaction, so addresses a previous
// agent left are never answered by the kernel in between.
func openGuard(name string, addrs []netip.Addr, handed map[netip.Addr]time.Duration) (*guard, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyARP, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	set := &nftables.Set{Table: t, Name: "vips", KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(set, elements(addrs, 0)); err != nil {
		return nil, err
	}
	hs := &nftables.Set{Table: t, Name: "handed", KeyType: nftables.TypeIPAddr, HasTimeout: true}
	var he []nftables.SetElement
	for a, d := range handed {
		if d > 0 {
			he = append(he, elements([]netip.Addr{a}, d)...)
		}
	}
	if err := c.AddSet(hs, he); err != nil {
		return nil, err
	}
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(nfARPIn), Priority: nftables.ChainPriorityFilter})
	for _, r := range []struct {
		set     *nftables.Set
		verdict expr.VerdictKind
	}{{hs, expr.VerdictAccept}, {set, expr.VerdictDrop}} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			// Ethernet/IPv4 ARP: operation at 6 (1: request), target protocol address at 24.
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 1}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: r.set.Name, SetID: r.set.ID},
			&expr.Verdict{Kind: r.verdict},
		}})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables table arp %s: %w", name, err)
	}
	return &guard{table: t, set: set, handed: hs}, nil
}

// intact reports whether the guard's chain is still there with its rule (a set of the right
// addresses is not enough: the rule that drops the requests may be gone).
func (g *guard) intact() bool {
	c, err := g.conn()
	if err != nil {
		return false
	}
	rules, err := c.GetRules(g.table, &nftables.Chain{Name: "input", Table: g.table})
	return err == nil && len(rules) == 2
}

// guardedNow reads the addresses the table name guards now (none when it is not there).
func guardedNow(name string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for a := range setNow(name, "vips") {
		out[a] = true
	}
	return out
}

// handedNow reads the addresses the table name lets the kernel answer for, with the time
// each is still let through.
func handedNow(name string) map[netip.Addr]time.Duration { return setNow(name, "handed") }

func setNow(table, name string) map[netip.Addr]time.Duration {
	out := map[netip.Addr]time.Duration{}
	c, err := nftables.New()
	if err != nil {
		return out
	}
	t := &nftables.Table{Family: nftables.TableFamilyARP, Name: table}
	set, err := c.GetSetByName(t, name)
	if err != nil {
		return out
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		return out
	}
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out[a] = e.Expires
		}
	}
	return out
}

func elements(addrs []netip.Addr, timeout time.Duration) []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range addrs {
		if a.Is4() {
			b := a.As4()
			out = append(out, nftables.SetElement{Key: b[:], Timeout: timeout})
		}
	}
	return out
}

func (g *guard) add(a netip.Addr) error    { return g.change(g.set, a, 0, true) }
func (g *guard) remove(a netip.Addr) error { return g.change(g.set, a, 0, false) }

// hand lets the kernel answer for a for d; take ends that before its time (the agent answers).
func (g *guard) hand(a netip.Addr, d time.Duration) error { return g.change(g.handed, a, d, true) }
func (g *guard) take(a netip.Addr) error {
	if _, ok := handedNow(g.table.Name)[a]; !ok {
		return nil // timed out already
	}
	return g.change(g.handed, a, 0, false)
}

func (g *guard) change(set *nftables.Set, a netip.Addr, timeout time.Duration, add bool) error {
	e := elements([]netip.Addr{a}, timeout)
	if len(e) == 0 {
		return nil
	}
	c, err := g.conn()
	if err != nil {
		return err
	}
	if add {
		err = c.SetAddElements(set, e)
	} else {
		err = c.SetDeleteElements(set, e)
	}
	if err != nil {
		return err
	}
	return c.Flush()
}

// close removes the table: on a clean stop, after the addresses are gone.
func (g *guard) close() error {
	c, err := g.conn()
	if err != nil {
		return err
	}
	c.DelTable(g.table)
	return c.Flush()
}
