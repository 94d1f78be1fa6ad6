package nodes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
)

// Witness is an address outside the dataplane nodes (by default the node's default gateway)
// that breaks ties: when exactly half of the known nodes are alive in a node's view, the node
// keeps its VIPs only while the witness answers its ARP requests. So the survivor of a node
// death in a two-node cluster keeps serving, and a node whose own link died lets go.
type Witness struct {
	Addr  netip.Addr
	Iface string
	// Every is how often the witness is asked; Window how long an answer counts.
	Every, Window time.Duration

	mu                  sync.Mutex   // one probe at a time
	last, tried, wanted atomic.Int64 // unix nanos: the last answer, the last probe, the last Reachable
}

// DefaultGateway finds the IPv4 default gateway of the main routing table and its interface.
func DefaultGateway() (netip.Addr, string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, "", err
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			gw, ok := netip.AddrFromSlice(r.Gw.To4())
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if ok && err == nil {
				return gw, link.Attrs().Name, nil
			}
		}
	}
	return netip.Addr{}, "", fmt.Errorf("no IPv4 default route")
}

// Run keeps asking the witness every Every while it is wanted (Reachable was called in the
// last ten seconds), until ctx ends: in steady state (no tie) it sends nothing.
func (w *Witness) Run(ctx context.Context) {
	t := time.NewTicker(w.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, w.wanted.Load())) < 10*time.Second {
			w.probe()
		}
	}
}

// Reachable reports whether the witness answered within the window; when it has not been
// asked lately, it asks now (waiting up to Every).
func (w *Witness) Reachable() bool {
	w.wanted.Store(time.Now().UnixNano())
	if time.Since(time.Unix(0, w.last.Load())) < w.Window {
		return true
	}
	if time.Since(time.Unix(0, w.tried.Load())) < w.Every {
		return false // just asked, no answer
	}
	return w.probe()
}

// probe sends one ARP request to the witness and waits up to Every for the answer.
func (w *Witness) probe() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tried.Store(time.Now().UnixNano())
	ifi, err := net.InterfaceByName(w.Iface)
	if err != nil {
		return false
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(w.Every))
	if _, err := c.Resolve(w.Addr); err != nil {
		return false
	}
	w.last.Store(time.Now().UnixNano())
	return true
}
