package failover

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/lantest"

	"github.com/l4lb/l4lb/dataplane/vip"
)

// TestAnnouncementsMoveNeighbourEntries proves on two hosts that vip.Announce makes a
// neighbour point its entry for the VIP at the announcing host: gratuitous ARP for IPv4,
// an unsolicited neighbour advertisement (override) for IPv6.
func TestAnnouncementsMoveNeighbourEntries(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	tp := lantest.NewTopology(t, map[string]string{"a": "192.0.2.1", "b": "192.0.2.2"})
	a, b := tp.Hosts["a"], tp.Hosts["b"]
	for _, h := range []*lantest.Host{a, b} {
		// No duplicate address detection: the addresses are usable at once.
		lantest.Sh(t, "ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
	}
	lantest.Sh(t, "ip", "-n", a.NS, "-6", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
	lantest.Sh(t, "ip", "-n", b.NS, "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	// b's link-local address must be usable before a's advertisement reaches it.
	waitLinkLocal(t, a)
	waitLinkLocal(t, b)

	for _, v := range []string{"192.0.2.100", "2001:db8::100"} {
		// b believes the VIP is elsewhere, as after a previous holder.
		lantest.Sh(t, "ip", "-n", b.NS, "neigh", "replace", v, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
		bits := "/32"
		if strings.Contains(v, ":") {
			bits = "/128"
		}
		lantest.Sh(t, "ip", "-n", a.NS, "addr", "add", v+bits, "dev", "eth0")
		time.Sleep(300 * time.Millisecond)
		if got := b.Neighbour(v); got != "02:00:00:00:00:99" {
			t.Fatalf("b's entry for %s changed to %q before any announcement", v, got)
		}
		if err := a.In(func() error { return vip.Announce("eth0", netip.MustParseAddr(v), nil) }); err != nil {
			t.Fatalf("announcing %s: %v", v, err)
		}
		want := a.MAC(t)
		end := time.Now().Add(5 * time.Second)
		for b.Neighbour(v) != want {
			if time.Now().After(end) {
				t.Fatalf("b's neighbour entry for %s is %q, want the announcer's %s", v, b.Neighbour(v), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func waitLinkLocal(t *testing.T, h *lantest.Host) {
	t.Helper()
	if err := lantest.WaitLinkLocal(h.NS, "eth0", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
