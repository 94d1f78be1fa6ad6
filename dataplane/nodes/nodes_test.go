package nodes

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"slices"
	"testing"
)

func TestHolderSpreadsAndMovesLittle(t *testing.T) {
	three := []string{"n1", "n2", "n3"}
	count := map[string]int{}
	moved := 0
	for i := range 300 {
		vip := fmt.Sprintf("192.0.2.%d", i%250+1) + fmt.Sprint(i/250)
		h := Holder(vip, three, nil)
		count[h]++
		if Holder(vip, []string{"n3", "n1", "n2"}, nil) != h {
			t.Fatal("the holder depends on the order of the live nodes")
		}
		// n2 dies: only its VIPs move.
		if after := Holder(vip, []string{"n1", "n3"}, nil); h != "n2" && after != h {
			moved++
		}
	}
	for _, n := range three {
		if count[n] < 60 {
			t.Errorf("node %s holds %d of 300 VIPs: %v", n, count[n], count)
		}
	}
	if moved != 0 {
		t.Fatalf("%d VIPs of surviving nodes moved", moved)
	}
}

func TestHolderSkipsDrainingNodesUnlessAlone(t *testing.T) {
	for i := range 50 {
		vip := fmt.Sprintf("198.51.100.%d", i)
		if h := Holder(vip, []string{"a", "b"}, map[string]bool{"a": true}); h != "b" {
			t.Fatalf("%s went to %s, a draining node", vip, h)
		}
		if h := Holder(vip, []string{"a"}, map[string]bool{"a": true}); h != "a" {
			t.Fatalf("the last node, draining, must keep %s", vip)
		}
		if h := Holder(vip, nil, nil); h != "" {
			t.Fatalf("no node, yet holder %q", h)
		}
	}
}

// A node's hardware addresses travel in its Meta, so another node can tell an l4lb node's ARP
// claim from a stranger's; an older node's one-byte Meta still decodes.
func TestMetaCarriesTheNodesMACs(t *testing.T) {
	a := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	b := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	m := Meta{Unfit: true, MACs: string(a) + string(b)}
	if got := decodeMeta(m.encode()); got != m {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	if got := decodeMeta([]byte{1}); got != (Meta{Draining: true}) {
		t.Fatalf("an older node's Meta decoded as %+v", got)
	}
	v := View{MACs: map[string]string{"n1": m.MACs}}
	if v.NodeWithMAC(b) != "n1" || v.NodeWithMAC(net.HardwareAddr{2, 0, 0, 0, 0, 3}) != "" {
		t.Fatalf("NodeWithMAC: %q for n1's, %q for a stranger's", v.NodeWithMAC(b), v.NodeWithMAC(net.HardwareAddr{2, 0, 0, 0, 0, 3}))
	}
}

// TestRankingIsTheHashOfVIPAndNode pins what is hashed: agents of two versions side by side (a
// rolling upgrade) must rank every VIP alike, so the input stays "vip/node", however written.
func TestRankingIsTheHashOfVIPAndNode(t *testing.T) {
	live := []string{"node-a", "node-b", "node-c", "node-d"}
	for i := range 200 {
		vip := fmt.Sprintf("198.51.100.%d", i)
		want := slices.Clone(live)
		score := func(n string) uint64 {
			h := fnv.New64a()
			h.Write([]byte(vip + "/" + n))
			return mix(h.Sum64())
		}
		slices.SortFunc(want, func(a, b string) int { return cmp.Compare(score(b), score(a)) })
		if got := Ranked(vip, live, nil); !slices.Equal(got, want) {
			t.Fatalf("%s: ranked %v, the hash of vip/node ranks %v", vip, got, want)
		}
	}
}

// TestClaimersAreByVIP: the view lists, for each VIP, the alive nodes other than this one that
// claim it, sorted and once each; a node not heard from is unheard, and one gone is left out.
func TestClaimersAreByVIP(t *testing.T) {
	g := &Gossip{node: "a", claims: map[string]claim{
		"a": {VIPs: []string{"198.51.100.1"}}, // this node's own claim is not another's
		"b": {VIPs: []string{"198.51.100.1", "198.51.100.2", "198.51.100.2"}},
		"c": {VIPs: []string{"198.51.100.1"}},
		"e": {VIPs: []string{"198.51.100.3"}}, // not alive
	}}
	v := View{Alive: []string{"a", "b", "c", "d"}}
	g.claimsView(&v)
	want := map[string][]string{"198.51.100.1": {"b", "c"}, "198.51.100.2": {"b"}}
	if !maps.EqualFunc(v.Claimers, want, slices.Equal) || !maps.Equal(v.Unheard, map[string]bool{"d": true}) {
		t.Fatalf("claimers %v, unheard %v; want %v and d unheard", v.Claimers, v.Unheard, want)
	}
	if got := v.ClaimedBy("198.51.100.1"); !slices.Equal(got, []string{"b", "c"}) || len(v.ClaimedBy("198.51.100.3")) != 0 {
		t.Fatalf("ClaimedBy: %v, and %v for a VIP only a node gone claimed", got, v.ClaimedBy("198.51.100.3"))
	}
}
