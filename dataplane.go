package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/l4lb/l4lb/controllers"
	"github.com/l4lb/l4lb/dataplane/agent"
	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/standalone"
	"github.com/l4lb/l4lb/dataplane/vip"
	"github.com/l4lb/l4lb/internal/watchdog"
)

func dataplaneCommand() func() error {
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
	leaseNS := flag.String("lease-namespace", envOr("POD_NAMESPACE", "l4lb-system"), "namespace of the node Leases that list the dataplane nodes")
	leaseRenew := flag.Duration("lease-renew", nodes.DefaultRenew, "how often a node renews its Lease (which says it runs the dataplane, not that it is alive)")
	gossipAddr := flag.String("gossip-address", os.Getenv("HOST_IP"), "this node's address for the gossip between dataplane nodes (the DaemonSet sets HOST_IP); empty: the address of the default route's interface")
	gossipPort := flag.Int("gossip-port", nodes.DefaultPort, "UDP and TCP port of the gossip (0: any free one, for several agents on one host)")
	gossipKey := flag.String("gossip-key-file", "", "file holding the key (16, 24 or 32 bytes, or that many base64-encoded) that encrypts the gossip; the chart mounts one from a Secret. Empty or missing: gossip in the clear")
	probe := flag.Duration("gossip-probe-interval", nodes.DefaultTiming.Probe, "how often a node probes another; a dead node is declared within about five of these")
	probeTimeout := flag.Duration("gossip-probe-timeout", nodes.DefaultTiming.ProbeTimeout, "how long a probe waits for its answer (above the LAN's round trip)")
	suspicion := flag.Int("gossip-suspicion-mult", nodes.DefaultTiming.Suspicion, "a suspected node is declared dead after this many probe intervals (more: fewer false deaths, slower failover)")
	witness := flag.String("witness", "", "address whose ARP answer breaks a tie (exactly half of the dataplane nodes in view): empty, the default gateway; \"none\": a tie keeps the VIPs")
	kernelUDP := flag.Bool("kernel-udp", true, "carry UDP listeners in the kernel (nftables NAT and conntrack, as Octavia uses LVS) where their settings allow; without CAP_NET_ADMIN the proxy carries them")
	memberCC := flag.String("member-congestion-control", "cubic", "TCP congestion control of connections to members (empty: the host's default); client connections keep the host's")
	drainGrace := flag.Duration("drain-grace", 5*time.Second, "on shutdown, how long to wait for other nodes to take this node's VIPs")
	handOff := flag.Bool("restart-handoff", true, "on shutdown with no other node to take the VIPs, when the DaemonSet will start another agent here (an upgrade, a deleted pod): the kernel carries the listeners meanwhile (false: they stop with the agent)")
	drainConns := flag.Duration("drain-connections", 20*time.Second, "on shutdown with no other node to take the VIPs, while the kernel carries the listeners until the next agent: how long proxied connections have to finish (keep it under the pod's termination grace)")
	return func() error {
		if *config != "" {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return standalone.Run(ctx, standalone.Options{Path: *config, MetricsAddr: *metrics, Pprof: *pprof, KernelUDP: *kernelUDP, MemberCongestion: *memberCC})
		}
		log := slog.Default()
		mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
			Scheme:                 controllers.NewScheme(),
			Metrics:                metricsOptions(*metrics, *metricsSecure),
			HealthProbeBindAddress: *probes,
			// Node Leases are watched in their namespace only.
			Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
				&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{*leaseNS: {}}},
			}},
		})
		if err != nil {
			return err
		}
		vips, err := vip.New(vip.Config{Interface: *iface, Announce: *announce, Refresh: *refresh})
		if err != nil {
			return err
		}
		// Addresses this agent added go with it on a clean stop. After a crash they stay, and
		// the kernel stays silent for them until the next agent adopts or removes them.
		defer vips.Close()

		a := &agent.Agent{Client: mgr.GetClient(), VIPs: vips, NodeName: *node}
		own, g, err := ownership(mgr, a, *node, *leaseNS, *leaseRenew, *gossipAddr, *gossipPort, *gossipKey,
			nodes.Timing{Probe: *probe, ProbeTimeout: *probeTimeout, Suspicion: *suspicion}, *witness)
		if err != nil {
			return err
		}
		a.Ownership = own
		own.Fitness = func() error { return fitness(*iface, vips) }
		table := nat.Optional(*kernelUDP, func() (*nat.Table, error) { return nat.Open("l4lb-"+*node, nat.DefaultTag) }, log)
		defer nat.CloseLogged(table, log)
		a.Server = proxy.New(proxy.Options{Registerer: crmetrics.Registry, OnHealth: a.OnHealth, NAT: table, MemberCongestion: *memberCC})
		defer a.Server.Close()
		dog := watchdog.New(time.Minute)
		a.Watchdog = dog
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
		err = mgr.Start(agent.Stopping{Agent: a, Grace: *drainGrace, Drain: *drainConns,
			Restarts: restarts(*handOff, mgr.GetAPIReader(), log), Log: log}.Context())
		g.Leave(time.Second)
		if !a.HandedOff() {
			// A clean stop that leaves nothing to the kernel: nor does it keep what a
			// previous agent left (an uninstall must leave no table behind).
			if rerr := nat.Remove(agent.HandOffTable); rerr != nil {
				log.Warn("removing the hand-off table", "err", rerr)
			}
		}
		return err
	}
}

// ownership joins the gossip of the dataplane nodes and sets up the VIP election.
func ownership(mgr ctrl.Manager, a *agent.Agent, node, leaseNS string, renew time.Duration, addr string, port int,
	keyFile string, timing nodes.Timing, witness string) (*agent.Ownership, *nodes.Gossip, error) {
	if addr == "" {
		var err error
		if addr, err = primaryAddress(); err != nil {
			return nil, nil, fmt.Errorf("--gossip-address: %w", err)
		}
	}
	key, err := gossipKey(keyFile)
	if err != nil {
		return nil, nil, err
	}
	log := ctrl.Log.WithName("gossip")
	if key == nil {
		log.Info("gossip is not encrypted: give --gossip-key-file (the chart mounts one from a Secret)")
	}
	var own *agent.Ownership
	g, err := nodes.StartGossip(nodes.GossipConfig{Node: node, Address: addr, Port: port, Key: key, Timing: timing, Log: log,
		OnChange: func() {
			if own != nil {
				own.Changed()
			}
		}})
	if err != nil {
		return nil, nil, err
	}
	reg := &nodes.Registry{Client: mgr.GetClient(), Namespace: leaseNS, Node: node, Address: g.Address(), Renew: renew}
	own = agent.NewOwnership(node, g, reg, mgr.GetClient(), crmetrics.Registry)
	own.Recorder = mgr.GetEventRecorder("l4lb-dataplane")
	switch witness {
	case "none":
	case "":
		if gw, iface, err := nodes.DefaultGateway(); err == nil {
			own.Witness = &nodes.Witness{Addr: gw, Iface: iface, Every: 200 * time.Millisecond, Window: time.Second}
		} else {
			log.Info("no witness: without a default gateway, half of the nodes keep their VIPs (docs/architecture.md)")
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

// gossipKey reads the gossip key: raw bytes of a valid AES length, or their base64.
func gossipKey(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	valid := func(n int) bool { return n == 16 || n == 24 || n == 32 }
	if d, err := base64.StdEncoding.DecodeString(string(b)); err == nil && valid(len(d)) {
		return d, nil
	}
	if valid(len(b)) {
		return b, nil
	}
	return nil, fmt.Errorf("--gossip-key-file %s: want 16, 24 or 32 bytes (or their base64), got %d", file, len(b))
}

// primaryAddress is the first IPv4 address of the default route's interface.
func primaryAddress() (string, error) {
	_, iface, err := nodes.DefaultGateway()
	if err != nil {
		return "", err
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return "", err
	}
	addrs, _ := ifi.Addrs()
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("no IPv4 address on %s", iface)
}

// fitness says whether this node may hold VIPs: its VIP interface is up, every interface it
// answers on is up with a carrier, and its event loops run.
func fitness(iface string, vips *vip.Local) error {
	up := func(name string) error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 {
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

// restarts tells whether another agent will start on this node after this one: its pod
// belongs to a DaemonSet that stays (an upgrade or a deleted pod, not an uninstall). Not in
// a pod: no. When the API server cannot be reached, yes: the node's traffic comes first.
func restarts(wanted bool, r client.Reader, log *slog.Logger) func(context.Context) bool {
	if !wanted {
		return nil
	}
	return func(ctx context.Context) bool {
		ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
		if ns == "" || name == "" {
			return false
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		// Gone, or no longer allowed to look (an uninstall removes the RBAC with the
		// DaemonSet): nothing follows. Unreachable: something likely does.
		final := func(err error) bool {
			return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
		}
		var pod corev1.Pod
		if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			log.Warn("cannot read this agent's pod", "err", err)
			return !final(err)
		}
		owner := metav1.GetControllerOf(&pod)
		if owner == nil || owner.Kind != "DaemonSet" {
			return false
		}
		var ds appsv1.DaemonSet
		err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: owner.Name}, &ds)
		if err != nil {
			log.Warn("cannot read this agent's DaemonSet", "err", err)
			return !final(err)
		}
		return ds.UID == owner.UID && ds.DeletionTimestamp.IsZero()
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
