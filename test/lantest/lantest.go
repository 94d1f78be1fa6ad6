// Package lantest is what tests on hosts made of network namespaces share: a LAN of hosts,
// running code inside a namespace, reaching the test's own services from there, and asking
// the LAN who has an address.
package lantest

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/arp"
	"github.com/vishvananda/netns"
)

// In runs f with the calling thread inside the named network namespace, so sockets f creates
// live there; the thread is put back before it is released.
func In(ns string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig)
	return f()
}

// WhoHas sends one ARP request for addr on iface of namespace ns, as arping does, and returns
// the distinct MACs that answered within wait.
func WhoHas(ns, iface, addr string, wait time.Duration) ([]string, error) {
	var macs []string
	err := In(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return err
		}
		defer c.Close()
		ip := netip.MustParseAddr(addr)
		if err := c.Request(ip); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		seen := map[string]bool{}
		for {
			p, _, err := c.Read()
			if err != nil {
				return nil // the deadline
			}
			if m := p.SenderHardwareAddr.String(); p.Operation == arp.OperationReply && p.SenderIP == ip && !seen[m] {
				seen[m] = true
				macs = append(macs, m)
			}
		}
	})
	return macs, err
}

// WaitLinkLocal waits until iface in namespace ns has a usable IPv6 link-local address (the
// one NDP speaks from appears a moment after the link comes up).
func WaitLinkLocal(ns, iface string, limit time.Duration) error {
	end := time.Now().Add(limit)
	for {
		out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", iface, "scope", "link").Output()
		if strings.Contains(string(out), "fe80") && !strings.Contains(string(out), "tentative") {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("no usable link-local address on %s in %s: %s", iface, ns, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FlushRuleset does in ns what `nft flush ruleset` does (Debian's stock /etc/nftables.conf
// begins with it): every nftables table goes.
func FlushRuleset(ns string) error {
	return In(ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.FlushRuleset()
		return c.Flush()
	})
}
