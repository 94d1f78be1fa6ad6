package vip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// responder answers, on one interface, the neighbours' ARP requests and neighbour
// solicitations for the VIPs this node holds, as MetalLB's speaker does: the kernel is told
// not to (guard), so when the agent dies nobody on this node answers any more.
type responder struct {
	ifi        *net.Interface
	onConflict ConflictFunc
	// defend announces a VIP again on an interface (announceOnce; tests record instead).
	defend func(iface string, a netip.Addr) error

	mu       sync.Mutex
	vips     map[netip.Addr]bool
	defended map[netip.Addr]time.Time // last defence of each VIP
	arp      *arp.Client
	ndp      *ndp.Conn
}

func newResponder(ifi *net.Interface, onConflict ConflictFunc) *responder {
	return &responder{ifi: ifi, onConflict: onConflict, defend: announceOnce, vips: map[netip.Addr]bool{}, defended: map[netip.Addr]time.Time{}}
}

// defendInterval is RFC 5227's DEFEND_INTERVAL: a node defends an address at most this often,
// so two claimants cannot flood the link.
const defendInterval = 10 * time.Second

// conflict handles an ARP from another MAC that claims a VIP this node answers for: it is
// reported, and unless the report says this node yields, the VIP is announced again (at most
// once per defendInterval) so neighbours point back here while the nodes settle who holds it.
func (r *responder) conflict(a netip.Addr, other net.HardwareAddr) {
	if r.onConflict != nil && r.onConflict(a, r.ifi.HardwareAddr, other) {
		return
	}
	r.mu.Lock()
	defend := time.Since(r.defended[a]) > defendInterval
	if defend {
		r.defended[a] = time.Now()
	}
	r.mu.Unlock()
	if defend {
		r.defend(r.ifi.Name, a)
	}
}

// answer starts answering for a.
func (r *responder) answer(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if is6(a) {
		if r.ndp == nil {
			c, err := listenNDP(r.ifi)
			if err != nil {
				return err
			}
			r.ndp = c
			go r.serveNDP(c)
		}
		group, err := ndp.SolicitedNodeMulticast(a)
		if err != nil {
			return err
		}
		if err := r.ndp.JoinGroup(group); err != nil {
			return err
		}
	} else if r.arp == nil {
		c, err := arp.Dial(r.ifi)
		if err != nil {
			return err
		}
		r.arp = c
		go r.serveARP(c)
	}
	r.vips[a] = true
	return nil
}

// announce sends one announcement of a, an IPv4 one on the responder's own ARP socket: a
// socket opened for each reads every address of the interface, which holds every VIP, so a
// node taking many VIPs at once would spend the square of their number.
func (r *responder) announce(a netip.Addr) error {
	if is6(a) {
		return unsolicitedNA(r.ifi, a)
	}
	r.mu.Lock()
	c := r.arp
	r.mu.Unlock()
	if c == nil {
		return net.ErrClosed // no longer answering on this interface
	}
	return garpOn(c, r.ifi, a)
}

// stop stops answering for a; it reports whether the responder answers for nothing now.
func (r *responder) stop(a netip.Addr) (idle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.vips, a)
	if is6(a) && r.ndp != nil {
		if group, err := ndp.SolicitedNodeMulticast(a); err == nil {
			r.ndp.LeaveGroup(group)
		}
	}
	return len(r.vips) == 0
}

func (r *responder) answers(a netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vips[a]
}

func (r *responder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.arp != nil {
		r.arp.Close()
		r.arp = nil
	}
	if r.ndp != nil {
		r.ndp.Close()
		r.ndp = nil
	}
}

func (r *responder) serveARP(c *arp.Client) {
	for {
		p, _, err := c.Read()
		if err != nil {
			if r.closed(err, func() bool { return r.arp != c }) {
				return
			}
			continue // a malformed frame
		}
		if p.SenderIP.IsValid() && !bytes.Equal(p.SenderHardwareAddr, r.ifi.HardwareAddr) && r.answers(p.SenderIP) {
			r.conflict(p.SenderIP, p.SenderHardwareAddr)
		}
		if p.Operation != arp.OperationRequest || !r.answers(p.TargetIP) {
			continue
		}
		c.Reply(p, r.ifi.HardwareAddr, p.TargetIP)
	}
}

// listenNDP opens the socket neighbour solicitations for VIPs arrive on: bound to no address,
// so it also gets those sent to a VIP itself (a neighbour confirming an entry it has, RFC 4861
// neighbour unreachability detection), which a socket bound to the link-local address never
// sees and the kernel does not answer for an address of another interface. Solicitations only.
func listenNDP(ifi *net.Interface) (*ndp.Conn, error) {
	c, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return nil, err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := errors.Join(c.SetICMPFilter(&f), c.SetControlMessage(ipv6.FlagInterface, true)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (r *responder) serveNDP(c *ndp.Conn) {
	for {
		m, cm, from, err := c.ReadFrom()
		if err != nil {
			if r.closed(err, func() bool { return r.ndp != c }) {
				return
			}
			continue
		}
		if cm == nil || cm.IfIndex != r.ifi.Index {
			continue // the socket hears every interface: answer on ours only
		}
		ns, ok := m.(*ndp.NeighborSolicitation)
		if !ok || !r.answers(ns.TargetAddress) {
			continue
		}
		na := &ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: ns.TargetAddress,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.ifi.HardwareAddr}}}
		dst := from
		if from.IsUnspecified() { // duplicate address detection: answer everyone
			dst = netip.MustParseAddr("ff02::1").WithZone(r.ifi.Name)
			na.Solicited = false
		}
		c.WriteTo(na, nil, dst)
	}
}

// closed reports whether a read failed because its socket was closed (replaced is true under
// the lock). A malformed frame is skipped at once (a flood of them must not starve the
// answers); another error of the socket is skipped after a pause, so a broken one cannot spin.
func (r *responder) closed(err error, replaced func() bool) bool {
	r.mu.Lock()
	gone := replaced()
	r.mu.Unlock()
	if gone || errors.Is(err, net.ErrClosed) {
		return true
	}
	if !malformed(err) {
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// malformed reports whether a read's error is the frame's, not the socket's: the socket's
// come as *net.OpError, the parsers' as plain errors.
func malformed(err error) bool {
	var op *net.OpError
	return !errors.As(err, &op)
}

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }
