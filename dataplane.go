package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/l4lb/l4lb/controllers"
	"github.com/l4lb/l4lb/dataplane/agent"
	"github.com/l4lb/l4lb/dataplane/model"
	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/nodes"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/dataplane/vip"
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
	iface := flag.String("vip-interface", "lo", "interface VIPs are added to when they are not already local")
	pprof := flag.Bool("pprof", false, "serve Go's /debug/pprof on the metrics address (standalone mode)")
	leaseNS := flag.String("lease-namespace", envOr("POD_NAMESPACE", "l4lb-system"), "namespace of the node Leases that elect VIP holders")
	leaseDuration := flag.Duration("lease-duration", nodes.DefaultTiming.Duration, "a node is dead after this long without renewing its Lease")
	leaseRenew := flag.Duration("lease-renew", nodes.DefaultTiming.Renew, "how often a node renews its Lease")
	leaseFence := flag.Duration("lease-fence", nodes.DefaultTiming.Fence, "a node that could not renew for this long drops its VIPs (must be below --lease-duration)")
	kernelUDP := flag.Bool("kernel-udp", true, "carry UDP listeners in the kernel (nftables NAT and conntrack, as Octavia uses LVS) where their settings allow; without CAP_NET_ADMIN the proxy carries them")
	memberCC := flag.String("member-congestion-control", "cubic", "TCP congestion control of connections to members (empty: the host's default); client connections keep the host's")
	drainGrace := flag.Duration("drain-grace", 5*time.Second, "on shutdown, how long to wait for other nodes to take this node's VIPs")
	return func() error {
		if *config != "" {
			return standalone(*config, *metrics, *pprof, *kernelUDP, *memberCC)
		}
		timing := nodes.Timing{Duration: *leaseDuration, Renew: *leaseRenew, Fence: *leaseFence}
		if timing.Fence >= timing.Duration || timing.Renew >= timing.Fence {
			return fmt.Errorf("want --lease-renew < --lease-fence < --lease-duration, got %v, %v, %v", timing.Renew, timing.Fence, timing.Duration)
		}
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
		hb := &nodes.Heartbeat{Client: mgr.GetClient(), Namespace: *leaseNS, Node: *node, Timing: timing}
		obs := &nodes.Observer{Client: mgr.GetClient(), Namespace: *leaseNS, Timing: timing}
		a := &agent.Agent{Client: mgr.GetClient(), VIPs: vip.NewLocal(*iface), NodeName: *node,
			Ownership: agent.NewOwnership(hb, obs, mgr.GetClient(), crmetrics.Registry)}
		a.Ownership.Recorder = mgr.GetEventRecorder("l4lb-dataplane")
		log := slog.Default()
		table := kernelTable(*kernelUDP, func() (*nat.Table, error) { return nat.Open("l4lb-"+*node, nat.DefaultTag) }, log)
		defer closeTable(table, log)
		a.Server = proxy.New(proxy.Options{Registerer: crmetrics.Registry, OnHealth: a.OnHealth, NAT: table, MemberCongestion: *memberCC})
		defer a.Server.Close()
		if err := a.SetupWithManager(mgr); err != nil {
			return err
		}
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return err
		}
		err = mgr.Start(drainOnSignal(hb, a.Ownership, *drainGrace))
		// Addresses this agent added go with it; a VIP left behind would be answered with
		// resets by a node that no longer listens.
		for _, addr := range a.VIPs.Held() {
			a.VIPs.Release(addr)
		}
		return err
	}
}

// drainOnSignal returns a context that ends after SIGTERM or SIGINT once this node has handed
// its VIPs over: the node announces it is draining, the others take its VIPs, and only then,
// or after grace, does the agent stop. Open connections are not cut before that.
func drainOnSignal(hb *nodes.Heartbeat, own *agent.Ownership, grace time.Duration) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		hb.Drain()
		end := time.Now().Add(grace)
		for len(own.Held()) > 0 && time.Now().Before(end) {
			select {
			case <-sig: // a second signal: stop now
				cancel()
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		// The VIPs are gone from here; serve what is already in the accept queues, and let
		// the new holders announce themselves, before the listeners close.
		select {
		case <-sig:
		case <-time.After(1500 * time.Millisecond):
		}
		cancel()
	}()
	return ctx
}

// kernelTable opens the nftables table that carries UDP listeners, or returns nil (the proxy
// carries them) when it is not wanted or cannot be programmed here.
func kernelTable(wanted bool, open func() (*nat.Table, error), log *slog.Logger) *nat.Table {
	if !wanted {
		return nil
	}
	t, err := open()
	if err != nil {
		log.Warn("UDP listeners go through the proxy: cannot program nftables", "err", err)
		return nil
	}
	return t
}

func closeTable(t *nat.Table, log *slog.Logger) {
	if t == nil {
		return
	}
	if err := t.Close(); err != nil {
		log.Warn("removing the kernel's UDP listeners", "err", err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// standaloneLocks holds the locks by which standalone instances claim their nftables tables;
// their tags start after the agent's (nat.DefaultTag) and those tests use.
const (
	standaloneLocks    = "/run/l4lb"
	standaloneFirstTag = 0x50
)

// standalone serves a file of l4lb objects: no API server, no controller. Each load balancer
// needs spec.vip.address. The file is reloaded on SIGHUP and when it changes.
func standalone(path, metricsAddr string, withPprof, kernelUDP bool, memberCC string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Several standalone instances may share a host: each claims a table of its own.
	table := kernelTable(kernelUDP, func() (*nat.Table, error) {
		return nat.OpenClaimed(standaloneLocks, "l4lb-standalone", standaloneFirstTag)
	}, log)
	defer closeTable(table, log)
	srv := proxy.New(proxy.Options{Registerer: reg, Logger: log, NAT: table, MemberCongestion: memberCC})
	defer srv.Close()
	if metricsAddr != "0" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if withPprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		}
		go func() {
			if err := http.ListenAndServe(metricsAddr, mux); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics endpoint", "err", err)
			}
		}()
	}
	load := func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, err := model.Decode(data)
		if err != nil {
			return err
		}
		res := model.Build(objs)
		for ref, p := range res.Problems {
			log.Error("not served", "object", ref.String(), "reason", p.Reason, "message", p.Message)
		}
		for key, err := range srv.Apply(res.Model) {
			log.Error("cannot serve listener", "listener", key, "err", err)
		}
		log.Info("serving", "config", path, "listeners", len(res.Model.Listeners))
		return nil
	}
	if err := load(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	last := modTime(path)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		case <-tick.C:
			if m := modTime(path); m.Equal(last) {
				continue
			} else {
				last = m
			}
		}
		if err := load(); err != nil {
			// A bad edit keeps the last good configuration serving.
			log.Error("reload failed; still serving the previous configuration", "err", err)
		}
	}
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}
