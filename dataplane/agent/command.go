package agent

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/standalone"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/manager"
	"github.com/l4lb/l4lb/internal/watchdog"
	"github.com/prometheus/client_golang/prometheus"
)

// Command is `l4lb dataplane`: it registers the agent's flags and returns what runs it, with
// the shutdown sequence (a hand-over to other nodes, or to the kernel until the next agent).
func Command() func() error {
	config := flag.String("config", "", "serve the l4lb objects in this YAML file without Kubernetes (reloaded when it changes)")
	// The agent runs in the host network: its ports are the node's, so they keep clear of the
	// ones common DaemonSets take (node-exporter's 9100, kube-proxy's 10249 and 10256, ...).
	metrics := flag.String("metrics-bind-address", ":10390", "address of the metrics endpoint (0 disables it)")
	metricsSecure := flag.Bool("metrics-secure", true, "serve metrics over HTTPS to clients that Kubernetes authenticates and authorises (get on the /metrics URL); false serves plain HTTP to anyone. The standalone mode always serves plain HTTP")
	probes := flag.String("health-probe-bind-address", ":10391", "address of /healthz and /readyz")
	hostname, _ := os.Hostname()
	node := flag.String("node-name", envOr("NODE_NAME", hostname), "this node's name (the DaemonSet sets NODE_NAME)")
	iface := flag.String("vip-interface", vip.DefaultInterface, "interface VIP addresses go on (marked as the agent's, so a restarted agent adopts them); not the one they are announced on, where the kernel would answer for them")
	announce := flag.String("announce-interface", "", "interface VIPs are announced and answered on (ARP, NDP); empty: per VIP, the one that routes to it; \"none\": nowhere (a router announces them)")
	refresh := flag.Duration("announce-refresh", vip.DefaultRefresh, "announce held VIPs again this often (switches and routers forget on their own clocks); 0: only at takeover")
	pprof := flag.Bool("pprof", false, "serve Go's /debug/pprof on the metrics address (standalone mode)")
	pprofAddr := flag.String("pprof-bind-address", "0", "address of Go's /debug/pprof (0 disables it; it needs no credentials, so keep it on loopback)")
	leaseNS := flag.String("lease-namespace", envOr("POD_NAMESPACE", "l4lb-system"), "namespace of the node Leases that list the dataplane nodes")
	leaseRenew := flag.Duration("lease-renew", nodes.DefaultRenew, "how often a node renews its Lease (which says it runs the dataplane, not that it is alive)")
	gossipAddr := flag.String("gossip-address", os.Getenv("HOST_IP"), "this node's address for the gossip between dataplane nodes (the DaemonSet sets HOST_IP); empty: the address of the default route's interface")
	gossipPort := flag.Int("gossip-port", nodes.DefaultPort, "UDP and TCP port of the gossip (0: any free one, for several agents on one host)")
	gossipKey := flag.String("gossip-key-file", "", "file holding the key (16, 24 or 32 bytes, or that many base64-encoded) that encrypts the gossip; the chart mounts one from a Secret. Empty or missing: gossip in the clear")
	probe := flag.Duration("gossip-probe-interval", nodes.DefaultTiming.Probe, "how often a node probes another; a dead node is declared within about five of these")
	probeTimeout := flag.Duration("gossip-probe-timeout", nodes.DefaultTiming.ProbeTimeout, "how long a probe waits for its answer (above the LAN's round trip)")
	suspicion := flag.Int("gossip-suspicion-mult", nodes.DefaultTiming.Suspicion, "a suspected node is declared dead after this many probe intervals (more: fewer false deaths, slower failover)")
	witness := flag.String("witness", "", "address a node must reach (its ARP answer) to keep VIPs on a tie (exactly half of the dataplane nodes in view, won by the half holding the tie-break Lease): empty, the default gateway; \"none\": the Lease alone decides")
	preemptive := flag.Bool("preemptive-failback", false, "move a VIP back to the first node of its ranking when that node comes back (keepalived without nopreempt); by default a VIP stays on a healthy holder, so its connections are not reset by a failback")
	kernelUDP := flag.Bool("kernel-udp", true, "carry UDP listeners in the kernel (nftables NAT and conntrack, as Octavia uses LVS) where their settings allow; without CAP_NET_ADMIN the proxy carries them")
	kernelTCP := flag.Bool("kernel-tcp", true, "carry TCP listeners in the kernel (nftables NAT and conntrack: each connection set up once, end to end) where their settings allow (docs/architecture.md says which keep a listener on the proxy); without CAP_NET_ADMIN the proxy carries them")
	synCookies := flag.Uint("syn-cookies-above", proxy.DefaultSynCookiesAbove, "half-open connections of a kernel-path TCP listener (answered by a member, not by the client) over which the node answers its SYNs itself with SYN cookies (nftables' synproxy) and sets a connection up only for a client that completes the handshake, as a stack does when a listener's backlog is full: a SYN flood then fills no connection-tracking table and reaches no member. Connections set up that way have no window scaling, SACK or timestamps (docs/architecture.md, \"SYN cookies\"). 0: never")
	memberCC := flag.String("member-congestion-control", "cubic", "TCP congestion control of connections to members (empty: the host's default); client connections keep the host's")
	drainGrace := flag.Duration("drain-grace", 5*time.Second, "on shutdown, how long to wait for other nodes to take this node's VIPs")
	handOff := flag.Bool("restart-handoff", true, "on shutdown with no other node to take the VIPs, when the DaemonSet will start another agent here (an upgrade, a deleted pod): the kernel carries the listeners meanwhile (false: they stop with the agent)")
	handOffLimit := flag.Duration("restart-handoff-limit", 2*time.Minute, "after a restart hand-off, how long the kernel carries the listeners and answers for the VIPs at most, waiting for the next agent (the members' health is frozen meanwhile); then it stops by itself and another node may take them")
	drainConns := flag.Duration("drain-connections", 20*time.Second, "on shutdown with no other node to take the VIPs, while the kernel carries the listeners until the next agent: how long proxied connections have to finish (keep it under the pod's termination grace)")
	cleanup := flag.Bool("cleanup", false, "remove what agents leave on this node (the VIPs on --vip-interface, l4lb's nftables tables) and exit: after an uninstall whose agents were killed before they could clean up (as kube-proxy --cleanup). Connections the kernel carries for l4lb end")
	return func() error {
		if *cleanup {
			return Cleanup(*iface)
		}
		if *config != "" {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return standalone.Run(ctx, standalone.Options{Path: *config, MetricsAddr: *metrics, Pprof: *pprof, KernelUDP: *kernelUDP, KernelTCP: *kernelTCP, SynCookiesAbove: uint32(*synCookies), MemberCongestion: *memberCC})
		}
		log := slog.Default()
		mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
			Scheme:                 manager.NewScheme(),
			Metrics:                manager.Metrics(*metrics, *metricsSecure),
			HealthProbeBindAddress: *probes,
			PprofBindAddress:       *pprofAddr,
			// Node Leases are watched in their namespace only. Managed fields are not kept:
			// nothing here reads them, and each reconciliation copies every object.
			Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
				&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{*leaseNS: {}}},
			}, DefaultTransform: cache.TransformStripManagedFields()},
		})
		if err != nil {
			return err
		}
		conflicts := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "l4lb", Name: "vip_conflicts_total",
			Help: "ARP from another MAC claiming a VIP this node answers for: two answerers."}, []string{"vip"})
		crmetrics.Registry.MustRegister(conflicts)
		var settle vip.ConflictFunc // the VIP election's rule, once it runs
		vips, err := vip.New(vip.Config{Interface: *iface, Announce: *announce, Refresh: *refresh,
			OnConflict: func(a netip.Addr, own, other net.HardwareAddr) bool {
				conflicts.WithLabelValues(a.String()).Inc()
				if settle == nil {
					log.Warn("another MAC claims a VIP this node answers for; announcing it again", "vip", a, "mac", other)
					return false
				}
				return settle(a, own, other)
			}})
		if err != nil {
			return err
		}
		// Addresses this agent added go with it on a clean stop. After a crash they stay, and
		// the kernel stays silent for them until the next agent adopts or removes them.
		defer vips.Close()

		a := &Agent{Client: mgr.GetClient(), VIPs: vips, NodeName: *node}
		own, g, err := Join(mgr, Membership{Node: *node, LeaseNamespace: *leaseNS, Renew: *leaseRenew,
			Address: *gossipAddr, Port: *gossipPort, KeyFile: *gossipKey,
			Timing: nodes.Timing{Probe: *probe, ProbeTimeout: *probeTimeout, Suspicion: *suspicion}, Witness: *witness})
		if err != nil {
			return err
		}
		a.Ownership = own
		conflictLog := ctrl.Log.WithName("vip-ownership")
		settle = func(a netip.Addr, mine, other net.HardwareAddr) bool {
			return own.Conflict(a, mine, other, conflictLog)
		}
		own.Fitness = func() error { return Fitness(*iface, vips) }
		own.Preemptive = *preemptive
		table := nat.Optional(*kernelUDP || *kernelTCP, func() (*nat.Table, error) { return nat.Open("l4lb-"+*node, nat.DefaultTag) }, log)
		// Handed off, the kernel's connections carry on through the restart.
		defer func() { nat.CloseLogged(table, a.HandedOff(), log) }()
		if table != nil {
			a.Flows = &FlowSync{Table: table, Send: g.SendDirect, Successors: own.Successors, Log: log.With("component", "flows")}
			g.OnDirect(a.Flows.Received)
			if err := mgr.Add(a.Flows); err != nil {
				return err
			}
		}
		a.Server = proxy.New(proxy.Options{Registerer: crmetrics.Registry, OnHealth: a.OnHealth, NAT: table, KernelUDP: *kernelUDP, KernelTCP: *kernelTCP, SynCookiesAbove: uint32(*synCookies), MemberCongestion: *memberCC})
		defer a.Server.Close()
		dog := watchdog.New(time.Minute)
		a.Watchdog, own.Watchdog = dog, dog
		if err := a.SetupWithManager(mgr); err != nil {
			return err
		}
		for name, check := range map[string]healthz.Checker{
			"engine":    func(*http.Request) error { return proxy.Responsive(time.Second) },
			"gossip":    func(*http.Request) error { return g.Check() },
			"reconcile": dog.Check,
		} {
			if err := mgr.AddHealthzCheck(name, check); err != nil {
				return err
			}
		}
		if err := mgr.AddReadyzCheck("joined", func(*http.Request) error {
			if !own.Joined() {
				return fmt.Errorf("not yet joined the other dataplane nodes")
			}
			return nil
		}); err != nil {
			return err
		}
		stopRefresh := make(chan struct{})
		defer close(stopRefresh)
		go vips.RefreshLoop(stopRefresh)
		// Every 250 ms: while the guard is gone (nft flush ruleset), the kernel of a standby,
		// which has the VIP local, answers beside the holder; two answerers must not last 1 s.
		go vips.RepairLoop(stopRefresh, 250*time.Millisecond, log.Warn)
		stopping := Stopping{Agent: a, Grace: *drainGrace, Drain: *drainConns, Limit: *handOffLimit, Log: log}
		if *handOff {
			stopping.Restarts = RestartsHere(mgr.GetAPIReader(), log)
		}
		err = mgr.Start(stopping.Context())
		g.Leave(time.Second)
		if !a.HandedOff() {
			// A clean stop that leaves nothing to the kernel: nor does it keep what a
			// previous agent left (an uninstall must leave no table behind).
			if rerr := nat.Remove(HandOffTable); rerr != nil {
				log.Warn("removing the hand-off table", "err", rerr)
			}
		}
		return err
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
