// Package vip makes VIP addresses local to the node that holds them.
package vip

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// Local adds VIPs to an interface when they are not already local, and removes only what it
// added.
type Local struct {
	iface string

	mu    sync.Mutex
	added map[netip.Addr]bool
}

// NewLocal returns a Local that adds addresses to the named interface.
func NewLocal(iface string) *Local { return &Local{iface: iface, added: map[netip.Addr]bool{}} }

// IsLocal reports whether the node already answers for a: an address of one of its interfaces,
// or anywhere in 127.0.0.0/8, which Linux treats as local as a whole.
func IsLocal(a netip.Addr) bool {
	if a.Is4() && a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// Ensure makes a local, adding it as a host address when it is not, and then announcing it
// to the neighbours (gratuitous ARP, unsolicited NA).
func (l *Local) Ensure(a netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.added[a] || IsLocal(a) {
		return nil
	}
	link, err := netlink.LinkByName(l.iface)
	if err != nil {
		return fmt.Errorf("VIP interface %q: %w", l.iface, err)
	}
	if err := netlink.AddrAdd(link, hostAddr(a)); err != nil {
		return fmt.Errorf("adding VIP %s to %s: %w", a, l.iface, err)
	}
	l.added[a] = true
	return Announce(l.iface, a)
}

// Release removes a if Ensure added it.
func (l *Local) Release(a netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.added[a] {
		return nil
	}
	delete(l.added, a)
	link, err := netlink.LinkByName(l.iface)
	if err != nil {
		return err
	}
	return netlink.AddrDel(link, hostAddr(a))
}

// Held lists the addresses this Local added.
func (l *Local) Held() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []netip.Addr
	for a := range l.added {
		out = append(out, a)
	}
	return out
}

func hostAddr(a netip.Addr) *netlink.Addr {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
}
