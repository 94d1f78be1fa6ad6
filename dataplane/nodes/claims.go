package nodes

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// Claims are what each node says it answers for, carried between the nodes so that a VIP
// stays where it is (a node coming back does not take it from a healthy holder) and moves
// only once its holder has let it go (a hand-over acknowledged, not timed).
//
// A node sends its own claim, whole, to every other alive node when it changes (TCP, as the
// set can outgrow a UDP packet), to each node it sees join (so a node starting or coming back
// from a partition hears everyone), and in memberlist's periodic push-pull (anti-entropy for
// a message lost to a cut). What a node said is forgotten when this node sees it die or leave:
// it is unheard (View.Unheard) until it speaks again, since it may have taken VIPs while it
// was cut off from here.
type claim struct {
	Node    string   `json:"n"`
	Version int64    `json:"v"` // the claimer's clock (ns) when it changed: a newer replaces an older
	VIPs    []string `json:"h"` // sorted
}

// claimsPushPull is how often a node exchanges claims with a random other node on top of the
// messages sent on each change.
const claimsPushPull = 5 * time.Second

// SetClaim says which VIPs this node answers for now (after it answers, or after it stopped
// answering: what the others read as the acknowledgement of a hand-over); the others hear of
// a change at once.
func (g *Gossip) SetClaim(vips []string) {
	vips = slices.Sorted(slices.Values(vips))
	g.mu.Lock()
	own := g.claims[g.node]
	if slices.Equal(own.VIPs, vips) && own.Version != 0 {
		g.mu.Unlock()
		return
	}
	c := claim{Node: g.node, Version: max(own.Version+1, time.Now().UnixNano()), VIPs: vips}
	g.claims[g.node] = c
	g.mu.Unlock()
	g.sendClaim(c, nil)
}

// sendClaim sends c to the node to, or to every other alive node (to nil), each on its own
// goroutine: a node cut off must not hold up the others' messages.
func (g *Gossip) sendClaim(c claim, to *memberlist.Node) {
	msg, err := json.Marshal(c)
	if err != nil || g.ml == nil {
		return
	}
	targets := []*memberlist.Node{to}
	if to == nil {
		targets = g.memberList()
	}
	for _, n := range targets {
		if n.Name != g.node {
			go g.deliver(c.Version, msg, n)
		}
	}
}

// deliver sends a claim to n until n takes it, a newer claim replaces it, n is no longer
// alive here, or gossip stops. A single try is not enough: a node comes back into view through
// a third one while the path between the two is still cut (a partition heals a link at a time),
// and until it has heard this node's claim it holds up takeovers (View.Unheard) or still
// believes this node answers for a VIP it let go.
func (g *Gossip) deliver(version int64, msg []byte, n *memberlist.Node) {
	for wait := 100 * time.Millisecond; g.ml.SendReliable(n, msg) != nil; wait = min(2*wait, time.Second) {
		select {
		case <-g.stopped:
			return
		case <-time.After(wait):
		}
		if g.ownClaim().Version != version || !g.isAlive(n.Name) {
			return
		}
	}
}

// isAlive reports whether node is alive (or suspect) in this node's view.
func (g *Gossip) isAlive(node string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.members[node]
	return ok
}

// ownClaim is this node's claim now.
func (g *Gossip) ownClaim() claim {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.claims[g.node]
}

// heard records a claim a node sent of itself.
func (g *Gossip) heard(buf []byte) {
	var c claim
	if json.Unmarshal(buf, &c) != nil || c.Node == "" || c.Node == g.node {
		return
	}
	g.mu.Lock()
	if old, ok := g.claims[c.Node]; !ok || c.Version >= old.Version {
		g.claims[c.Node] = c
	}
	g.mu.Unlock()
	g.changed()
}

// cameAlive sends this node's claim to a node it sees join or come back (which does the same
// on seeing this one), so neither waits for the next push-pull to hear the other.
func (g *Gossip) cameAlive(n *memberlist.Node) {
	if n.Name != g.node {
		g.sendClaim(g.ownClaim(), n)
	}
}

// wentAway forgets what a node that died or left said: when it comes back it is unheard
// until it speaks again.
func (g *Gossip) wentAway(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if node != g.node {
		delete(g.claims, node)
	}
}

// claimsView fills the claims of the alive nodes into v. Called with g.mu held.
func (g *Gossip) claimsView(v *View) {
	v.Claimers, v.Unheard = map[string][]string{}, map[string]bool{}
	for _, n := range v.Alive { // sorted: so is each VIP's list
		switch c, ok := g.claims[n]; {
		case n == g.node:
		case !ok:
			v.Unheard[n] = true
		default:
			for _, vip := range c.VIPs {
				if l := v.Claimers[vip]; len(l) == 0 || l[len(l)-1] != n { // once, if said twice
					v.Claimers[vip] = append(l, n)
				}
			}
		}
	}
}

// ClaimedBy lists the alive nodes other than this one that say they answer for vip.
func (v View) ClaimedBy(vip string) []string { return slices.Clone(v.Claimers[vip]) }
