// Package vip makes VIP addresses local to the node that holds them and answers for them on
// the LAN.
//
// Addresses go on lo by default, marked as the agent's (IPv4: the label lo:l4lb; IPv6, which
// has no labels: the flag noprefixroute, meaningless on a /128 of lo), so a restarted agent
// adopts what it finds and removes what it should not hold. They are announced and
// answered on the interface that routes to the VIP's subnet (or the default route's), by the
// agent itself: the kernel is told not to answer ARP for them (guard), so a node whose agent
// died goes silent for its VIPs instead of answering alongside the new holder.
package vip

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterface is where VIP addresses go unless told otherwise: not the interface they
// are announced on, where the kernel would answer for them itself.
const DefaultInterface = "lo"

// labelSuffix marks the IPv4 addresses the agent adds (the label is interface:suffix).
const labelSuffix = ":l4lb"

// NoAnnounce as Config.Announce: VIPs are made local but never announced or answered (a
// router announces them, or the tests' loopback needs nothing).
const NoAnnounce = "none"

// DefaultRefresh is how often held VIPs are announced again after takeover: switches' FDB and
// routers' ARP entries expire on their own clocks (MetalLB users met this), and a refresh
// keeps them pointing here.
const DefaultRefresh = 30 * time.Second

// guardTable names the nftables table that keeps the kernel from answering ARP for VIPs.
const guardTable = "l4lb-arp"

// unguardedLimit is how long an agent leaves the kernel answering for a VIP it finds outside
// the guard at its start, as if handed to it.
const unguardedLimit = 30 * time.Second

// Config says where VIPs live and where they are announced.
type Config struct {
	// Interface carries the addresses (DefaultInterface unless told otherwise); only the
	// addresses marked as the agent's are its own.
	Interface string
	// Announce is the interface VIPs are announced and answered on: "" picks, per VIP, the
	// one that routes to it; NoAnnounce, none.
	Announce string
	// Refresh is how often held VIPs are announced again (0: never).
	Refresh time.Duration
	// OnConflict, when set, hears of another MAC claiming a VIP this node answers for (an ARP
	// from it with the VIP as sender): two answerers, which the node defends against by
	// announcing itself again (RFC 5227), and which the caller counts and reports.
	OnConflict ConflictFunc
}

// ConflictFunc hears of another MAC (other) claiming vip, which this node answers for with own:
// it returns true when this node yields (the caller lets the VIP go), false when it defends.
type ConflictFunc func(vip netip.Addr, own, other net.HardwareAddr) (yield bool)

// Local makes VIPs local and answers for them.
type Local struct {
	cfg   Config
	guard *guard // nil when nothing is announced

	mu         sync.Mutex
	added      map[netip.Addr]bool      // addresses on cfg.Interface that are the agent's
	handedOff  map[netip.Addr]time.Time // adopted from an agent that left them to the kernel (Release), until when
	answered   map[netip.Addr]string    // VIPs answered for, and on which interface
	responders map[string]*responder
	released   bool // Release was called: the guard stays, to end the hand-off in its time
}

// New prepares the VIP interface and adopts the addresses a previous agent left on it: they
// stay until the first Sync says which are wanted. The kernel stays silent for those of an
// agent that died; for those an agent released (Release), it answers until this one does.
func New(cfg Config) (*Local, error) {
	l := &Local{cfg: cfg, added: map[netip.Addr]bool{}, handedOff: map[netip.Addr]time.Time{},
		answered: map[netip.Addr]string{}, responders: map[string]*responder{}}
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("VIP interface %q: %w", cfg.Interface, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, x := range addrs {
		if a, ok := netip.AddrFromSlice(x.IP); ok && l.marked(x) {
			l.added[a.Unmap()] = true
		}
	}
	if cfg.Announce != NoAnnounce {
		// What the kernel still answers for keeps the time it has left: an agent that
		// crash-loops must not extend the hand-off of the one before it.
		handed, guarded, left := handedNow(guardTable), guardedNow(guardTable), map[netip.Addr]time.Duration{}
		now := time.Now()
		for a := range l.added {
			d, ok := handed[a]
			if !ok && a.Is4() && !guarded[a] {
				// Released by an agent of an older version (which took it out of the guard),
				// or the guard was flushed: the kernel answers for it already.
				d, ok = unguardedLimit, true
			}
			if ok && d > 0 {
				l.handedOff[a] = now.Add(d)
				left[a] = d
			}
		}
		g, err := openGuard(guardTable, slices.Collect(maps.Keys(l.added)), left)
		if err != nil {
			return nil, fmt.Errorf("keeping the kernel from answering ARP for VIPs: %w", err)
		}
		l.guard = g
	}
	return l, nil
}

// IsLocal reports whether the node already answers for a: an address of one of its interfaces,
// or anywhere in 127.0.0.0/8, which Linux treats as local as a whole.
func IsLocal(a netip.Addr) bool {
	return (a.Is4() && a.IsLoopback()) || ownAddrs()[a.Unmap()]
}

// ownAddrs is every address of the node's interfaces (with the VIPs this agent added).
func ownAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}

// Sync makes the node hold exactly addrs (local, the kernel silent for them), and answer and
// announce those of answer (a subset: a VIP just handed over stays local a little longer,
// unanswered, so connections already on their way here still land). It returns the VIPs it
// could not set up.
func (l *Local) Sync(addrs, answer map[netip.Addr]bool) map[netip.Addr]error {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := map[netip.Addr]error{}
	// Let go first, take second: on a move the old holder stops answering before this node
	// announces.
	l.unanswerOthers(answer)
	for a := range l.added {
		if !addrs[a] {
			if err := l.remove(a); err != nil {
				errs[a] = err
			}
		}
	}
	// The node's own addresses are read once for every VIP to add: the interface holds the
	// VIPs already added, so reading them for each would cost the square of their number.
	var own map[netip.Addr]bool
	for a := range addrs {
		if own == nil && !l.added[a] {
			own = ownAddrs()
		}
		if err := l.add(a, own); err != nil {
			errs[a] = err
			continue
		}
		if answer[a] && l.answered[a] == "" && l.cfg.Announce != NoAnnounce && l.added[a] {
			if err := l.answer(a); err != nil {
				errs[a] = err
			}
		}
		if _, handed := l.handedOff[a]; handed && l.answered[a] != "" && l.guard != nil {
			// Answered by this agent now: the kernel goes silent again (a crash from here
			// must leave the address unanswered, as any other).
			if err := l.guard.take(a); err != nil {
				errs[a] = err
				continue
			}
			delete(l.handedOff, a)
		}
	}
	return errs
}

// Unanswer stops answering for every VIP not in answer, at once, leaving the rest (and every
// address) as it is: the agent lets a VIP go before it reprograms its engine, which can take a
// while, since the node taking it over waits for that. It reports whether it stopped any.
func (l *Local) Unanswer(answer map[netip.Addr]bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unanswerOthers(answer)
}

// unanswerOthers stops answering for the VIPs not in answer. Called with l.mu held.
func (l *Local) unanswerOthers(answer map[netip.Addr]bool) bool {
	stopped := false
	for a, iface := range l.answered {
		if !answer[a] {
			l.unanswer(a, iface)
			stopped = true
		}
	}
	return stopped
}

// add makes a local unless it is already (added, one of the node's own addresses, loopback).
func (l *Local) add(a netip.Addr, own map[netip.Addr]bool) error {
	if l.added[a] || (a.Is4() && a.IsLoopback()) || own[a.Unmap()] {
		return nil
	}
	if l.guard != nil {
		if err := l.guard.add(a); err != nil {
			return fmt.Errorf("guarding %s: %w", a, err)
		}
	}
	link, err := netlink.LinkByName(l.cfg.Interface)
	if err != nil {
		return fmt.Errorf("VIP interface %q: %w", l.cfg.Interface, err)
	}
	if err := netlink.AddrReplace(link, l.hostAddr(a)); err != nil {
		return fmt.Errorf("adding VIP %s to %s: %w", a, l.cfg.Interface, err)
	}
	l.added[a] = true
	return nil
}

// HandedOff lists the adopted addresses the kernel answers for, as the agent before this one
// left them (Release), and this one does not answer for yet.
func (l *Local) HandedOff() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Collect(maps.Keys(l.handedOff))
}

// Release leaves the VIPs to the kernel while the agent restarts: the addresses stay, the
// agent stops answering for them and the kernel answers instead, for limit at most (the guard
// lets them through until then), and Close leaves them be. The next agent adopts them (New)
// and answers in its turn; with none by then, the kernel goes silent for them by itself. IPv6
// VIPs go unanswered meanwhile (the kernel answers solicitations only for the interface's own
// addresses): neighbours keep what they have cached.
func (l *Local) Release(limit time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, iface := range l.answered {
		l.unanswer(a, iface)
	}
	var err error
	for a := range l.added {
		if l.guard != nil {
			err = errors.Join(err, l.guard.hand(a, limit))
		}
		delete(l.added, a)
	}
	l.released = true
	return err
}

func (l *Local) remove(a netip.Addr) error {
	link, err := netlink.LinkByName(l.cfg.Interface)
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(link, l.hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return err
	}
	delete(l.added, a)
	if l.guard != nil {
		if _, handed := l.handedOff[a]; handed {
			l.guard.take(a)
		}
		l.guard.remove(a)
	}
	delete(l.handedOff, a)
	return nil
}

func (l *Local) answer(a netip.Addr) error {
	iface := l.cfg.Announce
	if iface == "" {
		var err error
		if iface, err = RouteInterface(a, l.cfg.Interface); err != nil {
			return err
		}
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) == 0 {
		return nil // nobody to tell
	}
	r := l.responders[iface]
	if r == nil {
		r = newResponder(ifi, l.cfg.OnConflict)
		l.responders[iface] = r
	}
	if err := r.answer(a); err != nil {
		return fmt.Errorf("answering for %s on %s: %w", a, iface, err)
	}
	l.answered[a] = iface
	return announce(iface, a, func() error { return r.announce(a) }, func() bool { return l.answering(a, iface) })
}

// answering reports whether this agent still answers for a on iface.
func (l *Local) answering(a netip.Addr, iface string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answered[a] == iface
}

func (l *Local) unanswer(a netip.Addr, iface string) {
	delete(l.answered, a)
	if r := l.responders[iface]; r != nil && r.stop(a) {
		r.close()
		delete(l.responders, iface)
	}
}

// Held lists the addresses that are the agent's on the VIP interface.
func (l *Local) Held() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Collect(maps.Keys(l.added))
}

// Answered lists the VIPs answered for now, and where.
func (l *Local) Answered() map[netip.Addr]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.Addr]string{}
	for a, i := range l.answered {
		out[a] = i
	}
	return out
}

// RepairGuard puts the guard back when something outside removed or changed it (Debian's
// stock /etc/nftables.conf starts with `flush ruleset`): without it the kernel answers ARP
// for the VIPs this node only lingers on, or for all of them after a crash. It reports
// whether it repaired.
func (l *Local) RepairGuard() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.guard == nil {
		return false, nil
	}
	want := map[netip.Addr]bool{}
	for a := range l.added {
		if a.Is4() {
			want[a] = true
		}
	}
	// The kernel's own count of what it still lets through is the truth; only what it lost
	// is put back, with the time it had left.
	left, handedOK := map[netip.Addr]time.Duration{}, true
	now, handed := time.Now(), handedNow(guardTable)
	for a, until := range l.handedOff {
		if d := until.Sub(now); d > 0 && a.Is4() {
			left[a] = d
			_, in := handed[a]
			handedOK = handedOK && (in || d < time.Second)
		}
	}
	if maps.Equal(guardedNow(guardTable), want) && handedOK && l.guard.intact() {
		return false, nil
	}
	g, err := openGuard(guardTable, slices.Collect(maps.Keys(want)), left)
	if err != nil {
		return false, err
	}
	l.guard = g
	return true, nil
}

// RepairLoop runs RepairGuard every period until stop is closed, logging what it repaired.
func (l *Local) RepairLoop(stop <-chan struct{}, period time.Duration, log func(msg string, args ...any)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if repaired, err := l.RepairGuard(); err != nil {
			log("repairing the ARP guard", "err", err)
		} else if repaired {
			log("the ARP guard was removed or changed from outside (nft flush ruleset?): put back")
		}
	}
}

// RefreshLoop announces the answered VIPs again every Refresh until stop is closed.
func (l *Local) RefreshLoop(stop <-chan struct{}) {
	if l.cfg.Refresh <= 0 || l.cfg.Announce == NoAnnounce {
		return
	}
	t := time.NewTicker(l.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		byIface := map[string][]netip.Addr{}
		for a, iface := range l.Answered() {
			byIface[iface] = append(byIface[iface], a)
		}
		for iface, addrs := range byIface {
			announceAll(iface, addrs)
		}
	}
}

// Close releases everything: on a clean stop the VIPs go with the agent (a VIP left behind
// would be answered with resets by a node that no longer listens).
func (l *Local) Close() error {
	l.Sync(nil, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.guard != nil && len(l.added) == 0 && !l.released {
		err = l.guard.close()
	}
	return err
}

// RouteInterface is the interface that routes to a: the longest prefix of the main table that
// holds it, or the default route's; the VIP interface itself never counts.
func RouteInterface(a netip.Addr, vipIface string) (string, error) {
	family := netlink.FAMILY_V4
	if is6(a) {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", err
	}
	best, bestBits := 0, -1
	for _, r := range routes {
		bits := 0
		if r.Dst != nil {
			p, ok := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			if !ok || !netip.PrefixFrom(p.Unmap(), ones).Contains(a.Unmap()) {
				continue
			}
			bits = ones
		}
		if r.LinkIndex == 0 || bits <= bestBits {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil || link.Attrs().Name == vipIface || link.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		best, bestBits = r.LinkIndex, bits
	}
	if bestBits < 0 {
		return "", fmt.Errorf("no route to %s: give --announce-interface", a)
	}
	link, err := netlink.LinkByIndex(best)
	if err != nil {
		return "", err
	}
	return link.Attrs().Name, nil
}

// hostAddr is a as the agent adds it: a host address, marked.
func (l *Local) hostAddr(a netip.Addr) *netlink.Addr {
	if is6(a) {
		// No duplicate address detection: the address must be usable at once, and the node
		// that answers for it is decided by the election, not by DAD.
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: l.label()}
}

// label is the IPv4 mark, when it fits in a label (15 bytes).
func (l *Local) label() string {
	if s := l.cfg.Interface + labelSuffix; len(s) <= 15 {
		return s
	}
	return ""
}

// marked reports whether x is an address the agent added.
func (l *Local) marked(x netlink.Addr) bool {
	if x.IP.To4() != nil {
		return l.label() != "" && x.Label == l.label()
	}
	ones, _ := x.Mask.Size()
	return ones == 128 && x.Flags&unix.IFA_F_NOPREFIXROUTE != 0
}

// Clean removes the addresses agents added to iface, for a node no agent will run on again (an
// uninstall whose agents were killed); the ARP guard, an l4lb- table, goes with nat.RemoveAll.
func Clean(iface string) error {
	l := &Local{cfg: Config{Interface: iface}}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("VIP interface %q: %w", iface, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, x := range addrs {
		if l.marked(x) {
			if err := netlink.AddrDel(link, &x); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("removing %s from %s: %w", x.IP, iface, err)
			}
		}
	}
	return nil // the guard is an l4lb- table: nat.RemoveAll takes it
}

// Loopback makes VIPs local on lo and never announces them: for a host whose clients are
// local (the tests' control plane, the latency benchmark).
func Loopback() *Local {
	return &Local{cfg: Config{Interface: "lo", Announce: NoAnnounce}, added: map[netip.Addr]bool{},
		answered: map[netip.Addr]string{}, responders: map[string]*responder{}}
}
