package failover

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/dataplane/internal/lantest"

	"github.com/l4lb/l4lb/dataplane/vip"
)

// TestAnnouncementsMoveNeighbourEntries proves on two hosts that vip.Announce makes a
// neighbour point its entry for the VIP at the announcing host: gratuitous ARP for IPv4,
// an unsolicited neighbour advertisement (override) for IPv6.
func TestAnnouncementsMoveNeighbourEntries(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run make test as root")
	}
	tp := newTopology(t, map[string]string{"a": "192.0.2.1", "b": "192.0.2.2"})
	a, b := tp.hosts["a"], tp.hosts["b"]
	for _, h := range []*host{a, b} {
		// No duplicate address detection: the addresses are usable at once.
		sh(t, "ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
	}
	sh(t, "ip", "-n", a.ns, "-6", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", b.ns, "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	// b's link-local address must be usable before a's advertisement reaches it.
	waitLinkLocal(t, a)
	waitLinkLocal(t, b)

	for _, v := range []string{"192.0.2.100", "2001:db8::100"} {
		// b believes the VIP is elsewhere, as after a previous holder.
		sh(t, "ip", "-n", b.ns, "neigh", "replace", v, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
		bits := "/32"
		if strings.Contains(v, ":") {
			bits = "/128"
		}
		sh(t, "ip", "-n", a.ns, "addr", "add", v+bits, "dev", "eth0")
		time.Sleep(300 * time.Millisecond)
		if got := b.neighbour(v); got != "02:00:00:00:00:99" {
			t.Fatalf("b's entry for %s changed to %q before any announcement", v, got)
		}
		if err := a.in(func() error { return vip.Announce("eth0", netip.MustParseAddr(v)) }); err != nil {
			t.Fatalf("announcing %s: %v", v, err)
		}
		want := a.mac(t)
		end := time.Now().Add(5 * time.Second)
		for b.neighbour(v) != want {
			if time.Now().After(end) {
				t.Fatalf("b's neighbour entry for %s is %q, want the announcer's %s", v, b.neighbour(v), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func waitLinkLocal(t *testing.T, h *host) {
	t.Helper()
	if err := lantest.WaitLinkLocal(h.ns, "eth0", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
