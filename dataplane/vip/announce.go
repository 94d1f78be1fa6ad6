package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// announceAt is when the announcements of a newly held VIP go out: at once, then again, for
// neighbours that missed the first (keepalived does the same with its GARP repeats).
var announceAt = []time.Duration{0, 200 * time.Millisecond, time.Second, 3 * time.Second}

// announceOnce sends one announcement, without repeats (the periodic refresh).
func announceOnce(iface string, a netip.Addr) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	if is6(a) {
		return unsolicitedNA(ifi, a)
	}
	return garp(ifi, a)
}

// announceAll sends one announcement of each of addrs on iface (the periodic refresh of a
// node answering for many VIPs: the interface is looked up, and the ARP socket opened, once).
func announceAll(iface string, addrs []netip.Addr) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	var c *arp.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	var errs []error
	for _, a := range addrs {
		if is6(a) {
			errs = append(errs, unsolicitedNA(ifi, a))
			continue
		}
		if c == nil {
			if c, err = arp.Dial(ifi); err != nil {
				return err
			}
		}
		errs = append(errs, garpOn(c, ifi, a))
	}
	return errors.Join(errs...)
}

// Announce tells the neighbours on iface that a is here now: gratuitous ARP for IPv4,
// unsolicited neighbour advertisements (override set) for IPv6. It returns after the first
// one; the repeats are sent in the background while held reports the VIP still held here
// (nil: always), so a quick release does not leave neighbours pointed at this node.
func Announce(iface string, a netip.Addr, held func() bool) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) == 0 {
		return nil // nobody to tell
	}
	send := func() error { return garp(ifi, a) }
	if is6(a) {
		send = func() error { return unsolicitedNA(ifi, a) }
	}
	return announce(iface, a, send, held)
}

// announce sends a's first announcement on iface with send, and its repeats in the background
// while held.
func announce(iface string, a netip.Addr, send func() error, held func() bool) error {
	if err := send(); err != nil {
		return fmt.Errorf("announcing %s on %s: %w", a, iface, err)
	}
	go repeat(send, held)
	return nil
}

// repeat sends the repeats of an announcement at announceAt, while held.
func repeat(send func() error, held func() bool) {
	prev := time.Duration(0)
	for _, at := range announceAt[1:] {
		time.Sleep(at - prev)
		prev = at
		if held != nil && !held() {
			return
		}
		send()
	}
}

func garp(ifi *net.Interface, a netip.Addr) error {
	c, err := arp.Dial(ifi)
	if err != nil {
		return err
	}
	defer c.Close()
	return garpOn(c, ifi, a)
}

// garpOn sends a gratuitous ARP request for a on c: sender and target are both the VIP.
func garpOn(c *arp.Client, ifi *net.Interface, a netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, a.Unmap(), ethernet.Broadcast, a.Unmap())
	if err != nil {
		return err
	}
	return c.WriteTo(p, ethernet.Broadcast)
}

func unsolicitedNA(ifi *net.Interface, a netip.Addr) error {
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return err
	}
	defer c.Close()
	m := &ndp.NeighborAdvertisement{Override: true, TargetAddress: a, Options: []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr},
	}}
	return c.WriteTo(m, nil, netip.MustParseAddr("ff02::1").WithZone(ifi.Name))
}
