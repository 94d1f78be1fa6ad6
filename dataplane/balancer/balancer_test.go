package balancer

import (
	"fmt"
	"math"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/l4lb/l4lb/internal/model"
)

func members(weights ...int) []Member {
	out := make([]Member, len(weights))
	for i, w := range weights {
		out[i] = Member{Key: fmt.Sprintf("192.0.2.%d:80", i+1), Weight: w, Active: new(atomic.Int64)}
	}
	return out
}

func client(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), uint16(1024+i%50000))
}

func TestRoundRobinIsSmoothAndWeighted(t *testing.T) {
	s := New(model.RoundRobin, members(3, 1))
	var got []int
	for range 8 {
		got = append(got, s.Pick(client(0)))
	}
	if fmt.Sprint(got) != "[0 0 1 0 0 0 1 0]" && fmt.Sprint(got) != "[0 1 0 0 0 1 0 0]" {
		t.Fatalf("sequence %v is not smooth 3:1", got)
	}
	s = New(model.RoundRobin, members(1, 1))
	if a, b := s.Pick(client(0)), s.Pick(client(0)); a == b {
		t.Fatalf("equal weights must alternate, got %d %d", a, b)
	}
}

func TestDistributionFollowsWeights(t *testing.T) {
	for _, alg := range []model.Algorithm{model.RoundRobin, model.SourceIP, model.SourceIPPort} {
		t.Run(string(alg), func(t *testing.T) {
			ms := members(1, 2, 5, 256)
			s := New(alg, ms)
			count := make([]int, len(ms))
			const n = 200000
			for i := range n {
				count[s.Pick(client(i))]++
			}
			total := 1 + 2 + 5 + 256
			for i, m := range ms {
				want := float64(n) * float64(m.Weight) / float64(total)
				if math.Abs(float64(count[i])-want) > 0.2*want+50 {
					t.Errorf("member %d (weight %d): %d picks, want about %.0f", i, m.Weight, count[i], want)
				}
			}
		})
	}
}

func TestLeastConnectionsWeighted(t *testing.T) {
	ms := members(1, 2)
	s := New(model.LeastConnections, ms)
	ms[0].Active.Store(2)
	ms[1].Active.Store(3) // 3/2 < 2/1
	if got := s.Pick(client(0)); got != 1 {
		t.Fatalf("picked %d, want the member with fewer connections per weight", got)
	}
	ms[1].Active.Store(5)
	if got := s.Pick(client(0)); got != 0 {
		t.Fatalf("picked %d, want member 0", got)
	}
	ms[0].Active.Store(0)
	ms[1].Active.Store(0)
	seen := map[int]bool{}
	for range 4 {
		seen[s.Pick(client(0))] = true
	}
	if len(seen) != 2 {
		t.Fatalf("ties must rotate, saw %v", seen)
	}
}

func TestMaglevSameTableWhateverTheOrder(t *testing.T) {
	ms := members(1, 1, 3, 1, 2)
	rev := make([]Member, len(ms))
	for i := range ms {
		rev[len(ms)-1-i] = ms[i]
	}
	a, b := NewMaglev(ms, DefaultTableSize, false), NewMaglev(rev, DefaultTableSize, false)
	for i := range 5000 {
		c := client(i)
		if ms[a.Pick(c)].Key != rev[b.Pick(c)].Key {
			t.Fatalf("client %v: %s on one node, %s on another", c, ms[a.Pick(c)].Key, rev[b.Pick(c)].Key)
		}
	}
}

func TestMaglevRemovingAMemberMovesFewClients(t *testing.T) {
	ms := members(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	before := NewMaglev(ms, DefaultTableSize, false)
	after := NewMaglev(ms[1:], DefaultTableSize, false)
	moved := 0
	const n = 20000
	for i := range n {
		c := client(i)
		was := ms[before.Pick(c)].Key
		now := ms[1:][after.Pick(c)].Key
		if was != ms[0].Key && was != now {
			moved++
		}
	}
	// Ideal is 0; Maglev trades a little disruption for balance.
	if moved > n/20 {
		t.Fatalf("%d of %d clients not on the removed member moved", moved, n)
	}
}

func TestSourceIPIgnoresPortAndSourceIPPortDoesNot(t *testing.T) {
	ms := members(1, 1, 1, 1)
	ip, ipPort := New(model.SourceIP, ms), New(model.SourceIPPort, ms)
	addr := netip.MustParseAddr("198.51.100.7")
	seen := map[int]bool{}
	for p := range 200 {
		c := netip.AddrPortFrom(addr, uint16(2000+p))
		if ip.Pick(c) != ip.Pick(netip.AddrPortFrom(addr, 1)) {
			t.Fatal("SOURCE_IP depends on the port")
		}
		seen[ipPort.Pick(c)] = true
	}
	if len(seen) < 3 {
		t.Fatalf("SOURCE_IP_PORT used only %d members over 200 ports", len(seen))
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	ms := members(1, 2, 3)
	for _, alg := range []model.Algorithm{model.RoundRobin, model.LeastConnections, model.SourceIP, model.SourceIPPort} {
		s := New(alg, ms)
		c := client(3)
		if n := testing.AllocsPerRun(1000, func() { s.Pick(c) }); n != 0 {
			t.Errorf("%s: %v allocations per pick", alg, n)
		}
	}
	if New(model.RoundRobin, nil).Pick(client(1)) != -1 {
		t.Error("an empty pool must pick nothing")
	}
}

func BenchmarkMaglevBuild1000(b *testing.B) {
	ms := make([]Member, 1000)
	for i := range ms {
		ms[i] = Member{Key: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), Weight: 1 + i%4}
	}
	for b.Loop() {
		NewMaglev(ms, DefaultTableSize, false)
	}
}

func BenchmarkPick(b *testing.B) {
	ms := members(1, 1, 2, 3, 5, 8, 13, 21)
	for _, alg := range []model.Algorithm{model.RoundRobin, model.LeastConnections, model.SourceIP} {
		b.Run(string(alg), func(b *testing.B) {
			s := New(alg, ms)
			c := client(9)
			b.ReportAllocs()
			for b.Loop() {
				s.Pick(c)
			}
		})
	}
}
