package failover

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/test/lantest"
)

// The partition matrix of issue 27: faults real clusters meet, each held for a while (hold:
// L4LB_PARTITION_HOLD, 8 s in make test; make partitions holds each 60 s) under a client on
// the segment asking who has the VIP over and over and opening a connection every 20 ms, then
// healed. In every case two nodes answer for at most the detection bound (1 s), the side
// entitled to the VIP answers at the end of the hold, and after the heal exactly one node
// does and the VIP serves. The figures of each case are printed.
//
// Not in the matrix: a node's clock stepped (a network namespace has no clock of its own, and
// no rule compares two nodes' clocks: leases and the tie-break are judged on each node's own
// clock from what it saw change; dataplane/nodes' TestTieBreakHasOneWinningHalf puts one node's
// clock 30 s either way). The successor crash-looping is here after a rollout's stop; after
// the kernel hand-off of a node alone (used only when no other node could take the VIPs), its
// end is dataplane/nat's and dataplane/vip's TestAHandOff... tests.

// matrixCase is one fault: do applies it (given the holder and the others, in the order the
// lab lists them) and returns the nodes entitled to the VIP while it lasts and what heals it.
type matrixCase struct {
	name string
	do   func(l *lab, holder string, others []string) (entitled []string, heal func())
}

func holdFor(t *testing.T) time.Duration {
	if s := os.Getenv("L4LB_PARTITION_HOLD"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("L4LB_PARTITION_HOLD: %v", err)
		}
		return d
	}
	return 8 * time.Second
}

// cutBetween blackholes every pair across the two sides, both ways; the returned function
// heals it.
func (l *lab) cutBetween(a, b []string) func() {
	for _, x := range a {
		for _, y := range b {
			l.blackhole(x, y)
			l.blackhole(y, x)
		}
	}
	return func() {
		for _, x := range a {
			for _, y := range b {
				l.heal(x, y)
				l.heal(y, x)
			}
		}
	}
}

// cutAPI takes the API server away from nodes (their relay to it is cut, as a partition from
// the control plane would); the returned function gives it back.
func (l *lab) cutAPI(nodes ...string) func() {
	for _, n := range nodes {
		l.agents[n].fwd.Cut()
	}
	return func() {
		for _, n := range nodes {
			l.agents[n].fwd = lantest.Forward(l.t, l.tp.Hosts[n], 16443, l.api)
		}
	}
}

// blockGossip drops the gossip port's traffic in and out of node (a host firewall, a security
// group), in an nftables table of the node's own namespace; the returned function removes it.
func (l *lab) blockGossip(node string) func() {
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "test-block-gossip"}
	port := []byte{byte(nodes.DefaultPort >> 8), byte(nodes.DefaultPort & 0xff)}
	err := l.tp.Hosts[node].In(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.AddTable(table)
		for _, h := range []struct {
			name   string
			hook   *nftables.ChainHook
			offset uint32 // the port that is the gossip's: the destination in, either out
		}{{"in", nftables.ChainHookInput, 2}, {"out", nftables.ChainHookOutput, 0}, {"out2", nftables.ChainHookOutput, 2}} {
			ch := c.AddChain(&nftables.Chain{Name: h.name, Table: table, Type: nftables.ChainTypeFilter, Hooknum: h.hook, Priority: nftables.ChainPriorityFilter})
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: h.offset, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		return c.Flush()
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return func() {
		l.tp.Hosts[node].In(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			c.DelTable(table)
			return c.Flush()
		})
	}
}

// flushRuleset does what Debian's stock /etc/nftables.conf does first, in node's namespace.
func (l *lab) flushRuleset(node string) {
	if err := lantest.FlushRuleset(l.tp.Hosts[node].NS); err != nil {
		l.t.Fatal(err)
	}
}

// restartWith SIGKILLs node's agent and starts it again with extra flags.
func (l *lab) restartWith(node string, args ...string) {
	l.kill(node)
	l.agents[node].args = args
	l.start(node)
}

// crashLoop starts node's agent and SIGKILLs it 1.5 s later, again and again (a successor
// that crash-loops: it joins, may even become fit, and dies), until the returned function
// stops the loop and starts the agent for good.
func (l *lab) crashLoop(node string) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			l.start(node)
			select {
			case <-stop:
				return
			case <-time.After(1500 * time.Millisecond):
			}
			l.kill(node)
			select {
			case <-stop:
				l.start(node)
				return
			case <-time.After(500 * time.Millisecond): // kubelet's back-off, shortened
			}
		}
	}()
	return func() { close(stop); <-done }
}

// servingLab is a lab of n nodes, their agents started, serving the load balancer.
func servingLab(t *testing.T, n int) (*lab, []string) {
	l := newLab(t, n)
	var all []string
	for i := 1; i <= n; i++ {
		all = append(all, fmt.Sprintf("n%d", i))
		l.start(all[i-1])
	}
	l.createLB()
	l.createEcho()
	l.waitServed("start")
	return l, all
}

// runMatrix runs each case on the lab in turn, the lab healed and settled between them.
func runMatrix(t *testing.T, l *lab, all []string, cases []matrixCase) {
	hold := holdFor(t)
	for _, c := range cases {
		holder := l.waitSoleAnswer("")
		l.waitServed("before " + c.name)
		others := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == holder })
		kept := l.dialEcho() // a connection open through the case, one line each way after it
		arp := l.sampleARP()
		traffic := newClientLoop(l.cl, l.target)
		time.Sleep(500 * time.Millisecond)
		faulted := time.Now()
		entitled, heal := c.do(l, holder, others)
		var keptErr error
		for end := time.Now().Add(hold); time.Now().Before(end); {
			time.Sleep(min(10*time.Second, time.Until(end)))
			if keptErr == nil && time.Now().Before(end) {
				// A line every 10 s: the listener's idle timeout (Octavia's default, 50 s)
				// would end a connection left quiet through a 60 s fault.
				keptErr = kept.try("during " + c.name)
			}
		}
		var atEnd []string
		for _, m := range l.answering() {
			atEnd = append(atEnd, l.nodeOf(m))
		}
		heal()
		healed := time.Now()
		time.Sleep(5 * time.Second)
		ok, refused, cut := traffic.stop()
		maxMACs, moves := arp.stop()
		overlap, overlapAt := arp.longestOverlap()
		silent, silentAt := arp.longestSilence()
		if keptErr == nil {
			keptErr = kept.try("after " + c.name)
		}
		kept.c.Close()
		fmt.Printf("matrix %-58s holder %s; at the end of %v: %v answer (entitled %v); two answered for at most %v, none for at most %v; moved %d times; connections %d answered, %d refused, %d cut; one open throughout: %s\n",
			c.name+":", holder, hold, atEnd, entitled, overlap.Round(time.Millisecond), silent.Round(time.Millisecond), moves, ok, refused, cut, keptOrNot(keptErr))
		t.Logf("%s: faulted at %s, healed at %s; two answered from %s, none from %s", c.name,
			faulted.Format(clock), healed.Format(clock), overlapAt.Format(clock), silentAt.Format(clock))
		var after []string
		for _, m := range l.answering() {
			after = append(after, l.nodeOf(m))
		}
		switch {
		case overlap > time.Second:
			l.dumpLogs()
			t.Fatalf("%s: two nodes answered for %v at once (at most %d MACs); the bound is 1 s", c.name, overlap, maxMACs)
		case moves == 0 && keptErr != nil:
			// The VIP stayed where it was (a node that left and came back does not take it):
			// connections through it go on. (One that moved breaks them: issue 29.)
			l.dumpLogs()
			t.Fatalf("%s: the VIP did not move, yet a connection open through it broke: %v", c.name, keptErr)
		case silent > maxSilence:
			l.dumpLogs()
			t.Fatalf("%s: nobody answered for the VIP for %v; the bound here is %v (measured: under 0.7 s)", c.name, silent, maxSilence)
		case len(atEnd) != 1 || !slices.Contains(entitled, atEnd[0]):
			l.dumpLogs()
			t.Fatalf("%s: at the end of the fault %v answer for the VIP; want one of %v", c.name, atEnd, entitled)
		case len(after) != 1:
			l.dumpLogs()
			t.Fatalf("%s: %v after the heal (%v ago), %v answer for the VIP; want one", c.name, time.Since(healed).Round(time.Millisecond), after, after)
		}
	}
}

// clock is how the figures' times print, to match the agents' logs.
const clock = "15:04:05.000"

func keptOrNot(err error) string {
	if err != nil {
		return "broken"
	}
	return "kept"
}

// maxSilence bounds the time nobody answers for the VIP in a case: looser than the 1 s the
// matrix measures against (docs/benchmarks.md prints each case's figure), so that a loaded CI
// machine does not fail it, tight enough to catch a VIP left behind (10 s, before the fixes).
const maxSilence = 3 * time.Second

// TestPartitionMatrixThreeNodes: the faults of one node among three.
func TestPartitionMatrixThreeNodes(t *testing.T) {
	l, all := servingLab(t, 3)
	keyFile := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	runMatrix(t, l, all, []matrixCase{
		{"1|2, the holder alone with the API server", func(l *lab, h string, o []string) ([]string, func()) {
			healCut, healAPI := l.cutBetween([]string{h}, o), l.cutAPI(o...)
			return o, func() { healCut(); healAPI() }
		}},
		{"1|2, the holder alone, the API server with the two", func(l *lab, h string, o []string) ([]string, func()) {
			healCut, healAPI := l.cutBetween([]string{h}, o), l.cutAPI(h)
			return o, func() { healCut(); healAPI() }
		}},
		{"1|2, a non-holder alone with the API server", func(l *lab, h string, o []string) ([]string, func()) {
			healCut, healAPI := l.cutBetween(o[:1], []string{h, o[1]}), l.cutAPI(h, o[1])
			return []string{h}, func() { healCut(); healAPI() }
		}},
		{"asymmetric: the others do not hear the holder", func(l *lab, h string, o []string) ([]string, func()) {
			for _, n := range o {
				l.blackhole(h, n)
			}
			return o, func() {
				for _, n := range o {
					l.heal(h, n)
				}
			}
		}},
		{"a non-holder's gossip port blocked, its agent restarted", func(l *lab, h string, o []string) ([]string, func()) {
			unblock := l.blockGossip(o[0])
			l.restartWith(o[0])
			return []string{h}, unblock
		}},
		{"a non-holder restarted with another gossip key", func(l *lab, h string, o []string) ([]string, func()) {
			l.restartWith(o[0], "--gossip-key-file", keyFile)
			return []string{h}, func() { l.restartWith(o[0]) }
		}},
		{"the holder's agent SIGSTOPped for 0.7 s", func(l *lab, h string, o []string) ([]string, func()) {
			p := l.agents[h].cmd.Process
			p.Signal(syscall.SIGSTOP)
			time.Sleep(700 * time.Millisecond)
			p.Signal(syscall.SIGCONT)
			return all, func() {}
		}},
		{"the holder's agent stopped (a rollout), its successor crash-looping", func(l *lab, h string, o []string) ([]string, func()) {
			a := l.agents[h]
			a.cmd.Process.Signal(syscall.SIGTERM) // it drains: the others take its VIPs first
			a.cmd.Wait()
			return o, l.crashLoop(h)
		}},
		{"nft flush ruleset on the holder", func(l *lab, h string, o []string) ([]string, func()) {
			l.flushRuleset(h)
			return []string{h}, func() {}
		}},
		{"nft flush ruleset on a non-holder", func(l *lab, h string, o []string) ([]string, func()) {
			for _, n := range o {
				l.flushRuleset(n)
			}
			return []string{h}, func() {}
		}},
	})
}

// TestPartitionMatrixTies: exactly half the nodes on each side, won by one half only.
func TestPartitionMatrixTies(t *testing.T) {
	t.Run("2|2", func(t *testing.T) {
		l, all := servingLab(t, 4)
		halves := func(h string, o []string) ([]string, []string) { return []string{h, o[0]}, o[1:] }
		runMatrix(t, l, all, []matrixCase{
			{"2|2, both halves reaching the API server and the gateway", func(l *lab, h string, o []string) ([]string, func()) {
				a, b := halves(h, o)
				// Either half may win the tie-break Lease.
				return all, l.cutBetween(a, b)
			}},
			{"2|2, the API server reachable by the half without the holder", func(l *lab, h string, o []string) ([]string, func()) {
				a, b := halves(h, o)
				healCut, healAPI := l.cutBetween(a, b), l.cutAPI(a...)
				return b, func() { healCut(); healAPI() }
			}},
		})
	})
	t.Run("1|1", func(t *testing.T) {
		l, all := servingLab(t, 2)
		runMatrix(t, l, all, []matrixCase{
			{"1|1, a shared gateway, both reaching the API server", func(l *lab, h string, o []string) ([]string, func()) {
				return all, l.cutBetween([]string{h}, o)
			}},
		})
	})
}

// TestCleanupAfterSIGKILL: an agent SIGKILLed while it holds a VIP (an uninstall whose pods
// were killed) leaves the VIP on lo and its nftables tables; `l4lb dataplane --cleanup`, run
// on the node, leaves none.
func TestCleanupAfterSIGKILL(t *testing.T) {
	l, _ := servingLab(t, 1)
	h := l.tp.Hosts["n1"]
	left := func() (tables []string, vip bool) {
		h.In(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			ts, err := c.ListTables()
			for _, tb := range ts {
				if strings.HasPrefix(tb.Name, "l4lb-") {
					tables = append(tables, tb.Name)
				}
			}
			return err
		})
		return tables, strings.Contains(lantest.Sh(t, "ip", "-n", h.NS, "addr", "show", "dev", "lo"), vipAddr+"/32")
	}
	l.kill("n1")
	tables, vip := left()
	t.Logf("after SIGKILL: tables %v, VIP on lo: %v", tables, vip)
	if len(tables) == 0 || !vip {
		t.Fatalf("after SIGKILL the agent left tables %v and the VIP on lo: %v; the test expects both left", tables, vip)
	}
	if out, err := exec.Command("ip", "netns", "exec", h.NS, l.bin, "dataplane", "--cleanup").CombinedOutput(); err != nil {
		t.Fatalf("l4lb dataplane --cleanup: %v\n%s", err, out)
	}
	if tables, vip := left(); len(tables) != 0 || vip {
		t.Fatalf("after --cleanup: tables %v left, VIP on lo: %v", tables, vip)
	}
}

// TestSplitBrainSoak is the randomized run of issue 27 (make partitions; L4LB_SPLITBRAIN_SOAK
// sets how long, and make test leaves it out): four nodes under a random sequence of the
// matrix's faults (a node cut off with or without the API server, a 2|2 cut, one-way loss, an
// agent SIGKILLed and restarted, an agent paused, a ruleset flushed), each held 2 to 8 s and
// healed, while the client asks who has the VIP over and over and opens a connection every
// 20 ms. It prints the longest time two nodes answered together and the longest time none
// did, and fails when two answered for more than 1 s or nobody answers at the end.
func TestSplitBrainSoak(t *testing.T) {
	s := os.Getenv("L4LB_SPLITBRAIN_SOAK")
	if s == "" {
		t.Skip("set L4LB_SPLITBRAIN_SOAK (make partitions) to run it")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	l, all := servingLab(t, 4)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 27))
	t.Logf("seed %d", seed)
	var picked []string // the nodes the fault at hand picked, for the log
	pick := func(ns []string) string {
		n := ns[rng.IntN(len(ns))]
		picked = append(picked, n)
		return n
	}
	rest := func(n string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(x string) bool { return x == n })
	}
	faults := []struct {
		name string
		do   func() func()
	}{
		{"a node cut off", func() func() { n := pick(all); return l.cutBetween([]string{n}, rest(n)) }},
		{"a node cut off with the API server", func() func() {
			n := pick(all)
			heal, api := l.cutBetween([]string{n}, rest(n)), l.cutAPI(rest(n)...)
			return func() { heal(); api() }
		}},
		{"2|2", func() func() {
			p := rng.Perm(4)
			picked = []string{all[p[0]], all[p[1]]}
			return l.cutBetween([]string{all[p[0]], all[p[1]]}, []string{all[p[2]], all[p[3]]})
		}},
		{"one-way loss", func() func() {
			n := pick(all)
			for _, m := range rest(n) {
				l.blackhole(n, m)
			}
			return func() {
				for _, m := range rest(n) {
					l.heal(n, m)
				}
			}
		}},
		{"an agent SIGKILLed", func() func() { n := pick(all); l.kill(n); return func() { l.start(n) } }},
		{"an agent paused", func() func() {
			p := l.agents[pick(all)].cmd.Process
			p.Signal(syscall.SIGSTOP)
			time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
			p.Signal(syscall.SIGCONT)
			return func() {}
		}},
		{"a ruleset flushed", func() func() { l.flushRuleset(pick(all)); return func() {} }},
	}
	arp := l.sampleARP()
	traffic := newClientLoop(l.cl, l.target)
	counts := map[string]int{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		f := faults[rng.IntN(len(faults))]
		counts[f.name]++
		picked = nil
		at := time.Now()
		heal := f.do()
		t.Logf("%s %s %v", at.Format(clock), f.name, picked)
		time.Sleep(time.Duration(2000+rng.IntN(6000)) * time.Millisecond)
		heal()
		time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	ok, refused, cut := traffic.stop()
	maxMACs, moves := arp.stop()
	overlap, overlapAt := arp.longestOverlap()
	silent, silentAt := arp.longestSilence()
	fmt.Printf("split-brain soak, %v, 4 nodes, faults %v: two answered for at most %v (most at once %d, from %s), none for at most %v (from %s); the VIP moved %d times; connections %d answered, %d refused, %d cut\n",
		d, counts, overlap.Round(time.Millisecond), maxMACs, overlapAt.Format(clock), silent.Round(time.Millisecond), silentAt.Format(clock), moves, ok, refused, cut)
	if overlap > time.Second {
		l.dumpLogs()
		t.Fatalf("two nodes answered for %v at once; the bound is 1 s (seed %d)", overlap, seed)
	}
	if got := l.answering(); len(got) != 1 {
		l.dumpLogs()
		t.Fatalf("at the end %d nodes answer for the VIP (seed %d)", len(got), seed)
	}
}
