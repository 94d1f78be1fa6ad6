package agent

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/vip"
)

// Membership is how this node joins the other dataplane nodes.
type Membership struct {
	Node           string
	LeaseNamespace string        // of the node Leases that list the dataplane nodes
	Renew          time.Duration // how often this node renews its Lease
	Address        string        // for the gossip; empty: the default route interface's
	Port           int
	KeyFile        string // the gossip key (ReadKey); none: in the clear
	Timing         nodes.Timing
	Witness        string // breaks a tie: empty, the default gateway; "none": no witness
}

// Join joins the gossip of the dataplane nodes and sets up the VIP election.
func Join(mgr ctrl.Manager, m Membership) (*Ownership, *nodes.Gossip, error) {
	node, addr, witness := m.Node, m.Address, m.Witness
	if addr == "" {
		var err error
		if addr, err = nodes.PrimaryAddress(); err != nil {
			return nil, nil, fmt.Errorf("--gossip-address: %w", err)
		}
	}
	key, err := nodes.ReadKey(m.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	log := ctrl.Log.WithName("gossip")
	if key == nil {
		log.Info("gossip is not encrypted: give --gossip-key-file (the chart mounts one from a Secret)")
	}
	var own *Ownership
	g, err := nodes.StartGossip(nodes.GossipConfig{Node: node, Address: addr, Port: m.Port, Key: key, Timing: m.Timing, Log: log,
		StartUnfit: true, // until it has joined and its engine runs (Ownership.checkFitness)
		MACs:       nodes.LocalMACs(),
		OnChange: func() {
			if own != nil {
				own.Changed()
			}
		}})
	if err != nil {
		return nil, nil, err
	}
	reg := &nodes.Registry{Client: mgr.GetClient(), Namespace: m.LeaseNamespace, Node: node, Address: g.Address(), Renew: m.Renew}
	own = NewOwnership(node, g, reg, mgr.GetClient(), crmetrics.Registry)
	own.Recorder = mgr.GetEventRecorder("l4lb-dataplane")
	own.Tie = &nodes.TieBreak{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: m.LeaseNamespace, Node: node,
		AtOnce: own.ClaimsTieAtOnce}
	switch witness {
	case "none":
	case "":
		if gw, iface, err := nodes.DefaultGateway(); err == nil {
			own.Witness = &nodes.Witness{Addr: gw, Iface: iface, Every: 200 * time.Millisecond, Window: time.Second}
		} else {
			log.Info("no witness: without a default gateway, the tie-break Lease alone decides a tie (docs/architecture.md)")
		}
	default:
		w, err := netip.ParseAddr(witness)
		if err != nil || !w.Is4() {
			return nil, nil, fmt.Errorf("--witness %q: want an IPv4 address", witness)
		}
		iface, err := vip.RouteInterface(w, "")
		if err != nil {
			return nil, nil, fmt.Errorf("--witness: %w", err)
		}
		own.Witness = &nodes.Witness{Addr: w, Iface: iface, Every: 200 * time.Millisecond, Window: time.Second}
	}
	return own, g, nil
}

// Fitness says whether this node may hold VIPs: its VIP interface is up, every interface it
// answers on is up with a carrier, and its event loops run. The interfaces are read once (a
// node answers for a thousand VIPs on one or two of them).
func Fitness(iface string, vips *vip.Local) error {
	ifis, err := net.Interfaces()
	if err != nil {
		return err
	}
	flags := map[string]net.Flags{}
	for _, ifi := range ifis {
		flags[ifi.Name] = ifi.Flags
	}
	up := func(name string) error {
		f, ok := flags[name]
		switch {
		case !ok:
			return fmt.Errorf("interface %s not found", name)
		case f&net.FlagUp == 0 || f&net.FlagRunning == 0:
			return fmt.Errorf("interface %s is down", name)
		}
		return nil
	}
	if err := up(iface); err != nil {
		return err
	}
	for _, name := range vips.Answered() {
		if err := up(name); err != nil {
			return err
		}
	}
	return proxy.Responsive(time.Second)
}
