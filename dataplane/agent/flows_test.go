package agent

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/nat"
)

func flowFrom(client, vip, member, source string) nat.Flow {
	return nat.Flow{Protocol: unix.IPPROTO_TCP, Client: netip.MustParseAddrPort(client), VIP: netip.MustParseAddrPort(vip),
		Member: netip.MustParseAddrPort(member), Source: netip.MustParseAddrPort(source)}
}

// What a holder tells of its flows is what its successor keeps: started flows of either
// family with their shifts, ended ones forgotten, a message it cannot read wholly ignored.
func TestToldFlowsAreKeptByVIP(t *testing.T) {
	v4 := flowFrom("198.51.100.7:40000", "198.51.100.100:80", "198.51.100.11:8080", "198.51.100.100:40000")
	v4b := flowFrom("198.51.100.8:40001", "198.51.100.100:80", "198.51.100.12:8080", "198.51.100.100:40001")
	v6 := flowFrom("[2001:db8::7]:40000", "[2001:db8::100]:443", "[2001:db8::11]:8443", "[2001:db8::100]:40000")
	v6.Protocol = unix.IPPROTO_UDP
	// Set up by the SYN proxy: its shift goes with it.
	v4.SynProxy = nat.SynProxied{Set: true, SeqOffset: 0xdeadbeef, Adjusted: true}
	var s FlowSync
	msg := append(append(encodeFlow(v4, false, false), encodeFlow(v4b, false, false)...), encodeFlow(v6, false, true)...)
	s.Received(msg)
	s.Received(encodeFlow(v4b, true, false))
	s.Received(encodeFlow(v6, false, false)[:10]) // cut short: nothing of it
	got := map[nat.FlowKey]nat.Flow{}
	for _, flows := range s.received {
		for k, t := range flows {
			got[k] = t.f
		}
	}
	if len(got) != 2 || got[v4.Key()] != v4 || got[v6.Key()] != v6 {
		t.Fatalf("kept %+v; want %+v and %+v", got, v4, v6)
	}
	if len(s.received[netip.MustParseAddr("198.51.100.100")]) != 1 {
		t.Fatalf("kept by VIP: %+v", s.received)
	}
	// A flow no snapshot named is forgotten after unlistedFor (it ended before one could),
	// one a snapshot named after toldFor (its end was lost).
	age := func(d time.Duration) {
		for _, flows := range s.received {
			for k, t := range flows {
				t.at = t.at.Add(-d)
				flows[k] = t
			}
		}
		s.expire()
	}
	age(unlistedFor + time.Second)
	if len(s.received) != 1 || len(s.received[v6.VIP.Addr()]) != 1 {
		t.Fatalf("after %v: kept %+v; want the listed flow alone", unlistedFor, s.received)
	}
	age(toldFor)
	if len(s.received) != 0 {
		t.Fatalf("flows not told of for %v kept: %+v", toldFor, s.received)
	}
}

// Flows go to the successor of their VIP, in datagrams of whole flows under the size limit;
// a VIP this node does not hold tells nobody.
func TestFlowsGoToTheirVIPsSuccessor(t *testing.T) {
	sent := map[string][][]byte{}
	s := FlowSync{Send: func(node string, msg []byte) error { sent[node] = append(sent[node], msg); return nil },
		successors: map[netip.Addr]string{netip.MustParseAddr("198.51.100.100"): "n2"}}
	f := flowFrom("198.51.100.7:40000", "198.51.100.100:80", "198.51.100.11:8080", "198.51.100.100:40000")
	const many = 100
	for i := range many {
		f.Client = netip.AddrPortFrom(f.Client.Addr(), uint16(40000+i))
		s.tell(f, false)
	}
	s.tell(flowFrom("198.51.100.7:1", "198.51.100.200:80", "198.51.100.11:8080", "198.51.100.200:1"), false)
	s.flush()
	if len(sent) != 1 || len(sent["n2"]) < 2 {
		t.Fatalf("sent %d messages to %d nodes; want several, to n2 alone", len(sent["n2"]), len(sent))
	}
	var r FlowSync
	for _, msg := range sent["n2"] {
		if len(msg) > maxDatagram {
			t.Fatalf("a message of %d bytes (limit %d)", len(msg), maxDatagram)
		}
		r.Received(msg)
	}
	if got := len(r.received[netip.MustParseAddr("198.51.100.100")]); got != many {
		t.Fatalf("the successor was told of %d flows, want %d", got, many)
	}
}
