// Package standalone is the dataplane without Kubernetes (l4lb dataplane --config FILE, like
// haproxy -f): it serves the l4lb objects of a YAML file and reloads it when it changes.
package standalone

import (
	"context"
	"errors"
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

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/dataplane/proxy"
	"github.com/l4lb/l4lb/internal/model"
)

// standaloneLocks holds the locks by which standalone instances claim their nftables tables;
// their tags start after the agent's (nat.DefaultTag) and those tests use.
const (
	standaloneLocks    = "/run/l4lb"
	standaloneFirstTag = 0x50
)

// Options are the standalone mode's flags.
type Options struct {
	Path             string // the YAML file of l4lb objects
	MetricsAddr      string // "0": none
	Pprof            bool
	KernelUDP        bool
	KernelTCP        bool
	SynCookiesAbove  uint32
	MemberCongestion string
}

// Run serves the l4lb objects in o.Path until ctx ends: no API server, no
// controller; each load balancer needs spec.vip.address. The file is reloaded on SIGHUP and
// when it changes, and a bad edit keeps the last good configuration serving.
func Run(ctx context.Context, o Options) error {
	path, metricsAddr, withPprof, memberCC := o.Path, o.MetricsAddr, o.Pprof, o.MemberCongestion
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Several standalone instances may share a host: each claims a table of its own.
	table := nat.Optional(o.KernelUDP || o.KernelTCP, func() (*nat.Table, error) {
		return nat.OpenClaimed(standaloneLocks, "l4lb-standalone", standaloneFirstTag)
	}, log)
	defer nat.CloseLogged(table, false, log)
	srv := proxy.New(proxy.Options{Registerer: reg, Logger: log, NAT: table, KernelUDP: o.KernelUDP, KernelTCP: o.KernelTCP, SynCookiesAbove: o.SynCookiesAbove, MemberCongestion: memberCC})
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
