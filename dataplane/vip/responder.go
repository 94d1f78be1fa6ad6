package vip

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// responder answers, on one interface, the neighbours' ARP requests and neighbour
// solicitations for the VIPs this node holds, as MetalLB's speaker does: the kernel is told
// not to (guard), so when the agent dies nobody on this node answers any more.
type responder struct {
	ifi *net.Interface

	mu   sync.Mutex
	vips map[netip.Addr]bool
	arp  *arp.Client
	ndp  *ndp.Conn
}

func newResponder(ifi *net.Interface) *responder {
	return &responder{ifi: ifi, vips: map[netip.Addr]bool{}}
}

// answer starts answering for a.
func (r *responder) answer(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if is6(a) {
		if r.ndp == nil {
			c, _, err := ndp.Listen(r.ifi, ndp.LinkLocal)
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
		if p.Operation != arp.OperationRequest || !r.answers(p.TargetIP) {
			continue
		}
		c.Reply(p, r.ifi.HardwareAddr, p.TargetIP)
	}
}

func (r *responder) serveNDP(c *ndp.Conn) {
	for {
		m, _, from, err := c.ReadFrom()
		if err != nil {
			if r.closed(err, func() bool { return r.ndp != c }) {
				return
			}
			continue
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
// the lock); other errors are a bad frame, and are skipped after a pause so that a broken
// socket cannot spin.
func (r *responder) closed(err error, replaced func() bool) bool {
	r.mu.Lock()
	gone := replaced()
	r.mu.Unlock()
	if gone || errors.Is(err, net.ErrClosed) {
		return true
	}
	time.Sleep(10 * time.Millisecond)
	return false
}

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }
