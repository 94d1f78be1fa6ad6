package nodes

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// Timing is how fast gossip declares a node dead: a node probes another every Probe and waits
// ProbeTimeout for the answer (then asks others to probe it, and tries TCP); a node that
// failed is suspected, and declared dead Suspicion probe intervals later unless it refutes.
type Timing struct {
	Probe        time.Duration
	ProbeTimeout time.Duration
	Suspicion    int
}

// DefaultTiming declares a dead node well within a second on a LAN, so the next holder's
// announcement lands before a client's first SYN retransmission (1 s); what it costs each
// node does not grow with the cluster (docs/benchmarks.md).
var DefaultTiming = Timing{Probe: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, Suspicion: 3}

// DefaultPort is memberlist's (and MetalLB's speakers').
const DefaultPort = 7946

// Meta is what a node says of itself to the others.
type Meta struct {
	Draining bool // leaving: hands its VIPs over
	Unfit    bool // its VIP interface is down or its engine stopped serving: holds nothing
	// MACs are the node's hardware addresses, 6 bytes each (a string, so Metas compare): an
	// ARP claim for a VIP from one of them is another l4lb node's, not a stranger's.
	MACs string
}

func (m Meta) encode() []byte {
	var b byte
	if m.Draining {
		b |= 1
	}
	if m.Unfit {
		b |= 2
	}
	return append([]byte{b}, m.MACs...)
}

func decodeMeta(b []byte) Meta {
	if len(b) == 0 {
		return Meta{}
	}
	m := Meta{Draining: b[0]&1 != 0, Unfit: b[0]&2 != 0}
	if macs := b[1:]; len(macs)%6 == 0 {
		m.MACs = string(macs)
	}
	return m
}

// maxMACs bounds what Meta carries well within memberlist's 512 bytes of node metadata.
const maxMACs = 16

// LocalMACs are this host's Ethernet hardware addresses (loopback aside), for Meta.MACs.
func LocalMACs() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	var s strings.Builder
	n := 0
	for _, ifi := range ifs {
		if len(ifi.HardwareAddr) == 6 && ifi.Flags&net.FlagLoopback == 0 && n < maxMACs {
			s.Write(ifi.HardwareAddr)
			n++
		}
	}
	return s.String()
}

// GossipConfig is what a node needs to join the others.
type GossipConfig struct {
	Node    string
	Address string // the address others reach this node on (the node's own)
	Port    int
	// Key encrypts and authenticates the gossip (AES, 16, 24 or 32 bytes); nil sends it in
	// the clear.
	Key    []byte
	Timing Timing
	// OnChange is called (from memberlist's goroutines) when a node joins, leaves, dies or
	// changes its Meta.
	OnChange func()
	Log      logr.Logger
	// Transport, when set, replaces memberlist's UDP and TCP sockets (tests count bytes).
	Transport memberlist.Transport
	// StartUnfit makes the node tell the others it is unfit from its first message, until
	// SetMeta says otherwise: a starting agent must not draw VIPs before it can hold them.
	StartUnfit bool
	// MACs are what the node's Meta says its hardware addresses are (LocalMACs).
	MACs string
	// noPushPull turns memberlist's push-pull off (tests of what the other messages deliver).
	noPushPull bool
}

// Gossip is this node's membership in the dataplane nodes' gossip.
type Gossip struct {
	ml       *memberlist.Memberlist
	node     string
	meta     atomic.Value // Meta
	onChange func()
	log      logr.Logger

	mu sync.Mutex
	// The base of the quorum is known and listed together. known are the nodes this one has
	// seen alive: a dead node stays known until the API server says it is gone (Forget).
	// listed are the nodes whose Lease the API server listed last: only the API server, which
	// is linearizable, takes a node out of the base, never a timer on one side of a partition.
	known  map[string]bool
	listed map[string]bool
	// What each node says it answers for (claims.go), forgotten when it dies or leaves.
	claims map[string]claim
	// members are the alive (and suspect) nodes, this one included, as memberlist last told
	// of them (copies made in its events). Not memberlist's Members: it returns pointers into
	// state it writes under its own lock (a data race to read), and it takes that lock, which
	// memberlist holds while it calls the events, which take g.mu: asking it with g.mu held
	// deadlocked an agent after a partition healed.
	members map[string]*memberlist.Node
	// direct receives the messages other nodes send this one alone (SendDirect).
	direct atomic.Value // func([]byte)
	// stopped is closed when gossip stops (deliver gives up then).
	stopped chan struct{}
	stop    sync.Once
}

// StartGossip starts gossiping on the configured address; Join adds the others.
func StartGossip(c GossipConfig) (*Gossip, error) {
	g := &Gossip{node: c.Node, onChange: c.OnChange, log: c.Log, known: map[string]bool{c.Node: true},
		claims:  map[string]claim{c.Node: {Node: c.Node, Version: time.Now().UnixNano()}},
		members: map[string]*memberlist.Node{},
		stopped: make(chan struct{})}
	g.meta.Store(Meta{Unfit: c.StartUnfit, MACs: c.MACs})
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Node
	mc.BindAddr = c.Address
	mc.BindPort = c.Port
	mc.AdvertiseAddr = c.Address
	mc.AdvertisePort = c.Port
	mc.ProbeInterval = c.Timing.Probe
	mc.ProbeTimeout = c.Timing.ProbeTimeout
	mc.SuspicionMult = c.Timing.Suspicion
	// Lifeguard lengthens a suspicion that nobody confirms; not here: a holder cut off from
	// everyone gets no confirmation, and must find out as fast as the others (with the default
	// it answered long after the others took over: docs/benchmarks.md, "Design choices measured").
	mc.SuspicionMaxTimeoutMult = 1
	// Lifeguard also slows a node whose probes fail, in case the fault is its own slowness;
	// bounded low for the same reason.
	mc.AwarenessMaxMultiplier = 2
	mc.GossipInterval = c.Timing.Probe
	// A node declared dead while it was only cut off learns it (and refutes) when the cut
	// heals: gossip keeps reaching the dead this long; Join covers what comes later.
	mc.GossipToTheDeadTime = 60 * time.Second
	mc.PushPullInterval = claimsPushPull
	if c.noPushPull {
		mc.PushPullInterval = 0
	}
	mc.SecretKey = c.Key
	mc.Delegate = delegate{g}
	mc.Events = events{g}
	mc.Logger = log.New(logWriter(c.Log), "", 0)
	if c.Transport != nil {
		mc.Transport = c.Transport
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", net.JoinHostPort(c.Address, strconv.Itoa(c.Port)), err)
	}
	g.ml = ml
	return g, nil
}

// directTag starts a message one node sends another alone (SendDirect); claims are JSON,
// which starts with '{'.
const directTag = 0x01

// SendDirect sends msg to node alone, once, as a datagram (lost if the network loses it):
// for what is sent again and again anyway, as the kernel path's flows are (agent.FlowSync).
// Keep msg under about 1,200 bytes, so that it is not fragmented.
func (g *Gossip) SendDirect(node string, msg []byte) error {
	g.mu.Lock()
	n := g.members[node]
	g.mu.Unlock()
	if n == nil {
		return fmt.Errorf("node %s is not alive here", node)
	}
	return g.ml.SendBestEffort(n, append([]byte{directTag}, msg...))
}

// OnDirect makes fn receive what other nodes send this one alone (SendDirect), on gossip's
// goroutine: fn must not keep msg, nor block.
func (g *Gossip) OnDirect(fn func(msg []byte)) { g.direct.Store(fn) }

// Address is where the others reach this node's gossip (host:port), the port as bound.
func (g *Gossip) Address() string {
	n := g.ml.LocalNode()
	return HostPort(n.Addr.String(), int(n.Port))
}

// Join contacts the given peers (host:port) and learns the cluster from them; it returns how
// many answered.
func (g *Gossip) Join(peers []string) (int, error) {
	if len(peers) == 0 {
		return 0, nil
	}
	return g.ml.Join(peers)
}

// SetMeta tells the others what this node says of itself, and waits (briefly) for it to go out.
func (g *Gossip) SetMeta(m Meta) error {
	if g.meta.Swap(m) == m {
		return nil
	}
	err := g.ml.UpdateNode(time.Second)
	g.changed()
	return err
}

// Meta is what this node says of itself now.
func (g *Gossip) Meta() Meta { return g.meta.Load().(Meta) }

// Forget drops a dead node from the quorum's base: the API server says it no longer runs
// the dataplane.
func (g *Gossip) Forget(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if node != g.node {
		delete(g.known, node)
	}
}

// SetListed records the dataplane nodes the API server lists now (their Leases): a majority
// is counted against them and the nodes seen alive, so a node that cannot meet the others
// (its gossip port blocked, another key, a partition at its start) holds nothing.
func (g *Gossip) SetListed(nodes []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.listed = map[string]bool{}
	for _, n := range nodes {
		g.listed[n] = true
	}
}

// Leave tells the others this node is going, so they need not detect it, and stops.
func (g *Gossip) Leave(timeout time.Duration) {
	g.ml.Leave(timeout)
	g.Shutdown()
}

// Shutdown stops gossiping without a word, as a crash would.
func (g *Gossip) Shutdown() {
	g.stop.Do(func() { close(g.stopped) })
	g.ml.Shutdown()
}

// Check is a health check: this node is a member in good standing of its own view.
func (g *Gossip) Check() error {
	n := g.ml.LocalNode()
	if n == nil || n.State != memberlist.StateAlive {
		return fmt.Errorf("this node is not alive in its own gossip view")
	}
	return nil
}

// View is the membership as this node sees it now.
type View struct {
	Alive    []string // sorted, this node included
	Draining map[string]bool
	Unfit    map[string]bool
	Known    int               // nodes seen alive that have not left: what a majority is counted against
	MACs     map[string]string // the hardware addresses each alive node gave (Meta.MACs)
	// Claimers are, by VIP, the alive nodes other than this one that say they answer for it
	// (sorted; by VIP, as each tick asks for each VIP's); Unheard, the alive nodes whose claim
	// is not known (not heard since they came alive).
	Claimers map[string][]string
	Unheard  map[string]bool
}

// NodeWithMAC is the alive node that gave mac as one of its own, or "".
func (v View) NodeWithMAC(mac net.HardwareAddr) string {
	for n, macs := range v.MACs {
		for i := 0; i+6 <= len(macs); i += 6 {
			if macs[i:i+6] == string(mac) {
				return n
			}
		}
	}
	return ""
}

// Eligible are the alive nodes that may hold VIPs.
func (v View) Eligible() []string {
	return slices.DeleteFunc(slices.Clone(v.Alive), func(n string) bool { return v.Unfit[n] })
}

// Tied reports whether exactly half of the known nodes are alive in this view.
func (v View) Tied() bool { return 2*len(v.Alive) == v.Known }

// OneFromTie reports whether one more node gone would make this view a tie.
func (v View) OneFromTie() bool { return 2*(len(v.Alive)-1) == v.Known }

// Quorate reports whether this side of a partition may hold VIPs: more than half of the known
// nodes are alive in its view, or exactly half and tie says this half wins the tie (two halves
// cannot tell a partition from a death otherwise; TieBreak lets only one of them win). A nil
// tie keeps the VIPs on both halves.
func (v View) Quorate(tie func(alive []string) bool) bool {
	switch alive := len(v.Alive); {
	case 2*alive > v.Known:
		return true
	case v.Tied():
		return tie == nil || tie(v.Alive)
	}
	return false
}

// View returns the membership now.
func (g *Gossip) View() View {
	v := View{Draining: map[string]bool{}, Unfit: map[string]bool{}, MACs: map[string]string{}}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range g.members {
		g.known[n.Name] = true
		v.Alive = append(v.Alive, n.Name)
		m := decodeMeta(n.Meta)
		if n.Name == g.node {
			m = g.Meta() // what this node decided, before the others have heard it
		}
		if m.Draining {
			v.Draining[n.Name] = true
		}
		if m.Unfit {
			v.Unfit[n.Name] = true
		}
		if m.MACs != "" {
			v.MACs[n.Name] = m.MACs
		}
	}
	slices.Sort(v.Alive)
	g.claimsView(&v)
	base := maps.Clone(g.known)
	maps.Copy(base, g.listed)
	v.Known = len(base)
	return v
}

func (g *Gossip) changed() {
	if g.onChange != nil {
		g.onChange()
	}
}

type delegate struct{ g *Gossip }

func (d delegate) NodeMeta(int) []byte { return d.g.Meta().encode() }
func (d delegate) NotifyMsg(buf []byte) {
	if len(buf) > 0 && buf[0] == directTag {
		if fn, _ := d.g.direct.Load().(func([]byte)); fn != nil {
			fn(buf[1:])
		}
		return
	}
	d.g.heard(buf)
}
func (d delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState and MergeRemoteState carry the two nodes' own claims in memberlist's push-pull.
func (d delegate) LocalState(bool) []byte {
	b, _ := json.Marshal(d.g.ownClaim())
	return b
}
func (d delegate) MergeRemoteState(buf []byte, _ bool) { d.g.heard(buf) }

type events struct{ g *Gossip }

// The events are called with memberlist's node lock held: they copy what they need and
// never call memberlist back.

func (e events) NotifyJoin(n *memberlist.Node) {
	e.g.log.Info("a node came into view", "peer", n.Name, "address", n.Address())
	c := copyNode(n)
	e.g.mu.Lock()
	e.g.known[n.Name] = true
	e.g.members[n.Name] = c
	e.g.mu.Unlock()
	e.g.cameAlive(c)
	e.g.changed()
}

func (e events) NotifyLeave(n *memberlist.Node) {
	e.g.log.Info("a node went out of view", "peer", n.Name, "left", n.State == memberlist.StateLeft)
	e.g.mu.Lock()
	delete(e.g.members, n.Name)
	e.g.mu.Unlock()
	e.g.wentAway(n.Name)
	if n.State == memberlist.StateLeft {
		e.g.Forget(n.Name) // a clean leave: not a death, no longer part of the quorum
	}
	e.g.changed()
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	c := copyNode(n)
	e.g.mu.Lock()
	if _, ok := e.g.members[n.Name]; ok {
		e.g.members[n.Name] = c
	}
	e.g.mu.Unlock()
	e.g.changed()
}

func copyNode(n *memberlist.Node) *memberlist.Node {
	c := *n
	c.Addr, c.Meta = slices.Clone(n.Addr), slices.Clone(n.Meta)
	return &c
}

// memberList is the alive nodes, this one included.
func (g *Gossip) memberList() []*memberlist.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Collect(maps.Values(g.members))
}

// logWriter passes memberlist's errors, warnings and notices (a node marked failed) to the
// agent's log; its debug lines (one per probe) are dropped.
func logWriter(l logr.Logger) io.Writer {
	r, w := io.Pipe()
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			line := s.Text()
			if !strings.Contains(line, "[DEBUG]") {
				l.Info(strings.TrimSpace(line))
			}
		}
	}()
	return w
}
