package vip

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
)

// A malformed frame is skipped at once; only the socket's own errors pause the responder (a
// flood of junk must not starve the answers).
func TestMalformedFramesDoNotPause(t *testing.T) {
	for _, err := range []error{arp.ErrInvalidHardwareAddr, arp.ErrInvalidIP, io.ErrUnexpectedEOF} {
		if !malformed(err) {
			t.Errorf("%v: taken for a socket error", err)
		}
	}
	if malformed(&net.OpError{Op: "read", Err: io.EOF}) {
		t.Error("a socket's read error taken for a malformed frame")
	}
}

// Another MAC claiming a held VIP is reported every time, and defended at most once per
// defendInterval.
func TestAConflictIsReportedAndDefended(t *testing.T) {
	var seen []string
	yield := false
	r := newResponder(&net.Interface{Name: "l4lb-none"}, func(a netip.Addr, _, mac net.HardwareAddr) bool {
		seen = append(seen, a.String()+" "+mac.String())
		return yield
	})
	// Recorded, not sent: looking an interface up here would also fill the net package's
	// process-wide zone cache with this namespace's indexes, which the namespace tests of
	// this package then read (a CI run failed so).
	defences := 0
	r.defend = func(string, netip.Addr) error { defences++; return nil }
	a := netip.MustParseAddr("198.51.100.9")
	other := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	r.conflict(a, other)
	r.conflict(a, other)
	if len(seen) != 2 || seen[0] != "198.51.100.9 02:00:00:00:00:09" {
		t.Fatalf("reported: %v", seen)
	}
	if defences != 1 {
		t.Fatalf("defended %d times within the defence interval, want once", defences)
	}
	// A node that yields does not defend.
	yield = true
	b := netip.MustParseAddr("198.51.100.10")
	r.conflict(b, other)
	if defences != 1 || len(seen) != 3 {
		t.Fatalf("after yielding: %d defences, %d reports; want no new defence, one new report", defences, len(seen))
	}
}
