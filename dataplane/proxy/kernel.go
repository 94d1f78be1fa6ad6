package proxy

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/dataplane/nat"
	"github.com/l4lb/l4lb/internal/model"
)

// kernelStatsEvery is how often the kernel's counters are added to the metrics, and its
// listeners' half-open connections counted (a flood shows in a second).
const kernelStatsEvery = time.Second

// openFlowsEvery is how often the kernel path's open connections are counted, for the active
// connections' metrics: counting reads every flow of the node's conntrack table that l4lb
// started, the ended connections it keeps a while included, which a node of short
// connections holds by the ten thousand (once a second, that was most of an agent's CPU
// in the SYN flood bench; docs/benchmarks.md). Octavia's amphorae report theirs every 10 s.
const openFlowsEvery = 5 * time.Second

// kernelTable is what the Server needs of a nat.Table (tests wrap one).
type kernelTable interface {
	Apply([]nat.Listener) error
	Repair() (bool, error)
	Stats(open bool) (nat.Stats, error)
	Flood(keys []string) error
}

// byKernel reports whether the kernel carries l (Options.NAT set and l's protocol named,
// every setting of l honoured there from node, and not refused by the kernel as l is now);
// the loops carry the rest.
func (s *Server) byKernel(node nat.Node, l model.Listener) bool {
	_, refused := s.refused[l.Key]
	wanted := (l.Protocol == model.UDP && s.opts.KernelUDP) || (l.Protocol == model.TCP && s.opts.KernelTCP)
	return s.nat != nil && wanted && node.Eligible(l) && !refused
}

// InKernel reports whether the kernel carries the listener key now (else the proxy does).
func (s *Server) InKernel(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.kernel[key]
	return ok
}

// programKernel gives the kernel its listeners, and the loops those it refuses (a module
// missing for one of their settings, say): one listener the kernel cannot carry must neither
// go dark nor keep the others out. They stay in the loops until their settings change, as a
// refusal would only come again. It returns the listeners that could be served by neither.
// Called with s.mu held.
func (s *Server) programKernel() map[string]error {
	err := s.applyKernel()
	var refused *nat.RefusedError
	failed := map[string]error{}
	switch {
	case err == nil:
	case errors.As(err, &refused):
		failed = s.toLoops(refused)
	default: // the kernel runs what it ran before
		s.log.Error("cannot program the kernel's listeners", "err", err)
		for key := range s.kernel {
			failed[key] = err
		}
	}
	return failed
}

// toLoops hands the listeners the kernel refused to the loops; it returns those they cannot
// serve either. Called with s.mu held.
func (s *Server) toLoops(refused *nat.RefusedError) map[string]error {
	failed := map[string]error{}
	for key, kerr := range refused.Listeners {
		l, ok := s.kernel[key]
		if !ok {
			continue // gone since
		}
		delete(s.kernel, key)
		s.refused[key] = l
		s.metrics.inKernel.WithLabelValues(key).Set(0)
		s.log.Error("the kernel refuses a listener: the proxy carries it until its settings change", "listener", key, "err", kerr)
		apply := s.applyUDP
		if l.Protocol == model.TCP {
			apply = s.applyTCP
		}
		if err := apply(l, s.pools); err != nil {
			failed[key] = err
			s.log.Error("cannot serve listener", "listener", key, "address", l.Address, "err", err)
		}
	}
	return failed
}

// applyKernel gives the kernel its listeners with their members as they are now: the
// members new flows may take (the pool's choice: healthy primaries, else backups) with their
// weights, the others with none. Called with s.mu held, after every Apply and health change.
func (s *Server) applyKernel() error {
	if s.nat == nil {
		return nil
	}
	ls := make([]nat.Listener, 0, len(s.kernel))
	for _, l := range s.kernel {
		ls = append(ls, s.natListener(l, poolFor(l, s.pools)))
	}
	slices.SortFunc(ls, func(a, b nat.Listener) int { return strings.Compare(a.Key, b.Key) })
	return s.nat.Apply(ls)
}

// natListener is l for the kernel, with p's members as they are now: those new flows may
// take (the pool's choice: healthy primaries, else backups) with their weights, the others
// with none.
func (s *Server) natListener(l model.Listener, p *pool) nat.Listener {
	kl := nat.Listener{Key: l.Key, Protocol: l.Protocol, Address: l.Address, AllowedCIDRs: l.AllowedCIDRs,
		ConnectionLimit: l.ConnectionLimit, Timeout: l.TimeoutClientData}
	if l.Unlimited {
		// Octavia's "unlimited", taken at its word: nftables' connlimit walks the listener's
		// open connections for each new one, a cost a SYN flood multiplies (docs/benchmarks.md,
		// "SYN flood").
		kl.ConnectionLimit = 0
	}
	if l.Protocol == model.TCP {
		// One conntrack entry stands for both of the proxy's connections: it idles out after
		// the shorter of their timeouts, as the proxy closes on the first to run out.
		kl.ConnectTimeout = l.TimeoutMemberConnect
		kl.SynProxy = s.opts.SynCookiesAbove > 0
		for _, d := range []time.Duration{l.TimeoutClientData, l.TimeoutMemberData} {
			if d > 0 && (kl.Timeout == 0 || d < kl.Timeout) {
				kl.Timeout = d
			}
		}
	}
	if p == nil {
		return kl
	}
	// The kernel has no connection counts at the moment of choice: a LEAST_CONNECTIONS
	// listener handed to it (HandOffListeners) is carried round robin until the next agent serves it.
	kl.Algorithm = p.spec.Algorithm
	if kl.Algorithm == model.LeastConnections {
		kl.Algorithm = model.RoundRobin
	}
	serving := p.choice.Load().members
	for _, m := range p.members {
		w := 0
		if slices.Contains(serving, m) {
			w = m.spec.Weight
		}
		kl.Members = append(kl.Members, nat.Member{Key: memberKey(m.pool, m.spec), Address: m.spec.Address,
			Weight: w, Down: !m.up.Load() || !m.spec.AdminStateUp})
	}
	return kl
}

// HandOffListeners are the listeners keep selects, TCP and UDP, with their members as they
// are now, for the kernel to carry while this agent stops and the next one starts (the
// agent's HandOff). Listeners whose pool speaks the PROXY protocol stay out (their members
// would take the client's first bytes for a header), and so do those whose members the node
// could only reach by forwarding, which is off (Kubernetes nodes have it on).
func (s *Server) HandOffListeners(keep func(model.Listener) bool) []nat.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	var specs []model.Listener
	for _, l := range s.tcp {
		specs = append(specs, l.cfg.Load().spec)
	}
	for _, l := range s.udp {
		specs = append(specs, l.cfg.Load().spec)
	}
	for _, l := range s.kernel {
		specs = append(specs, l)
	}
	var ls []nat.Listener
	node := nat.ReadNode()
	for _, l := range specs {
		p := poolFor(l, s.pools)
		if !keep(l) || !node.Reaches(l) || l.ConnectionLimit == 0 || (p != nil && (p.spec.Protocol == model.PoolPROXY || p.spec.Protocol == model.PoolPROXYV2)) {
			continue
		}
		ls = append(ls, s.natListener(l, p))
	}
	slices.SortFunc(ls, func(a, b nat.Listener) int { return strings.Compare(a.Key, b.Key) })
	return ls
}

// watchFlood says whether listener key is flooded (flooded[key]), from its members' counts
// and the SYNs left to the SYN proxy since the last look (cookies). A listener with more
// half-open connections (answered by a member, not by the client) than
// Options.SynCookiesAbove is, as a stack turns to SYN cookies when a listener's backlog is
// full; once flooded its SYNs no longer leave half-open connections, so it stays flooded
// while the SYNs the SYN proxy answers for it would have kept that many (at a fifth of them
// a second: timeoutMemberConnect's default holds each 5 s). Its SYNs go to the SYN proxy for
// a minute from each look that finds it flooded (nat.Table.Flood). It logs when a flood
// starts and ends. Called with s.mu held.
func (s *Server) watchFlood(key string, members map[string]nat.Counts, cookies uint64, flooded map[string]bool) {
	above := uint64(s.opts.SynCookiesAbove)
	if above == 0 {
		flooded[key] = false
		return
	}
	halfOpen := uint64(0)
	for _, c := range members {
		halfOpen += uint64(c.HalfOpen)
	}
	perSecond := uint64(float64(cookies) / kernelStatsEvery.Seconds())
	on := halfOpen > above || flooded[key] && perSecond > above/5
	switch {
	case on && !flooded[key]:
		s.log.Warn("SYN flood at a kernel-path listener: the node answers its SYNs with SYN cookies", "listener", key,
			"halfOpen", halfOpen, "above", above)
	case !on && flooded[key]:
		s.log.Info("the SYN flood at a kernel-path listener is over: SYN cookies stop within a minute", "listener", key)
	}
	flooded[key] = on
}

// registerKernelTables adds the conntrack table's use and the SYN proxy's counts to the
// metrics, read at each scrape: the kernel path's flows live in the table, and a full one
// drops every new flow of the node; the SYN proxy keeps a flood out of it.
func registerKernelTables(reg prometheus.Registerer, log *slog.Logger) {
	table := func(pick func(nat.Conntrack) uint64) func() float64 {
		return readAtScrape(nat.ReadConntrack, "the conntrack table's use", pick, log)
	}
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: "l4lb", Name: name, Help: help}
	}
	cookies := func(name, help string, pick func(nat.SynCookies) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts(opts(name, help)),
			readAtScrape(nat.ReadSynCookies, "the SYN proxy's statistics", pick, log))
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(opts("conntrack_entries", "Entries in the node's connection-tracking table, where the kernel path's flows live."),
			table(func(c nat.Conntrack) uint64 { return c.Entries })),
		prometheus.NewGaugeFunc(opts("conntrack_max", "Size of the node's connection-tracking table (net.netfilter.nf_conntrack_max)."),
			table(func(c nat.Conntrack) uint64 { return c.Max })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(opts("conntrack_drops_total", "Packets the node's conntrack dropped: table full (drop, early_drop) or insert failed.")),
			table(func(c nat.Conntrack) uint64 { return c.Drops })),
		cookies("syn_cookies_sent_total", "SYNs to flooded kernel-path listeners the node answered with a SYN cookie (--syn-cookies-above).",
			func(c nat.SynCookies) uint64 { return c.Sent }),
		cookies("syn_cookies_valid_total", "Connections set up from a valid SYN cookie (without window scaling, SACK or timestamps).",
			func(c nat.SynCookies) uint64 { return c.Valid }),
		cookies("syn_cookies_invalid_total", "ACKs to a flooded kernel-path listener whose cookie was refused (dropped).",
			func(c nat.SynCookies) uint64 { return c.Invalid }))
}

// readAtScrape is a metric's value read from the kernel at each scrape: pick of what read
// returns, 0 (and a warning) when it fails.
func readAtScrape[T any](read func() (T, error), what string, pick func(T) uint64, log *slog.Logger) func() float64 {
	return func() float64 {
		v, err := read()
		if err != nil {
			log.Warn("cannot read "+what, "err", err)
			return 0
		}
		return float64(pick(v))
	}
}

// kernelStats adds the kernel's counters to the metrics until the server closes, and puts
// the rules back if something outside removed them. The kernel keeps totals; the metrics get
// what grew since the last look.
func (s *Server) kernelStats() {
	seen := map[string]nat.Counts{}
	refused := map[string]uint64{}
	flooded := map[string]bool{}   // listeners whose SYNs the SYN proxy answers now
	cookies := map[string]uint64{} // their SYNs left to it so far
	t := time.NewTicker(kernelStatsEvery)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		var notTaken *nat.RefusedError
		if repaired, err := s.nat.Repair(); errors.As(err, &notTaken) {
			s.mu.Lock()
			s.toLoops(notTaken)
			s.mu.Unlock()
		} else if err != nil {
			s.log.Error("cannot repair the kernel's listeners", "err", err)
		} else if repaired {
			s.log.Warn("the kernel's listeners had lost rules (nftables flushed from outside?): programmed again")
		}
		open := tick%int(openFlowsEvery/kernelStatsEvery) == 0
		st, err := s.nat.Stats(open)
		if err != nil {
			s.log.Warn("cannot read the kernel's counters", "err", err)
			continue
		}
		s.mu.Lock()
		for key, members := range st.Members {
			if _, ok := s.kernel[key]; !ok {
				continue // removed since: its metrics are gone
			}
			lm := s.metrics.listener(key)
			active := 0
			for mk, c := range members {
				was := seen[key+"\x00"+mk]
				if c.Flows < was.Flows || c.BytesIn < was.BytesIn || c.BytesOut < was.BytesOut {
					was = nat.Counts{} // the table was built anew (repair): counters restarted
				}
				seen[key+"\x00"+mk] = c
				in, out, flows := float64(c.BytesIn-was.BytesIn), float64(c.BytesOut-was.BytesOut), float64(c.Flows-was.Flows)
				lm.bytesIn.Add(in)
				lm.bytesOut.Add(out)
				lm.total.Add(flows)
				active += c.Active
				if m := s.members[mk]; m != nil {
					m.metrics.bytesIn.Add(in)
					m.metrics.bytesOut.Add(out)
					m.metrics.total.Add(flows)
					if open {
						m.metrics.active.Set(float64(c.Active))
					}
				}
			}
			if open {
				lm.active.Set(float64(active))
			}
			s.watchFlood(key, members, st.Cookies[key]-min(cookies[key], st.Cookies[key]), flooded)
			cookies[key] = st.Cookies[key]
			if r := st.Refused[key]; r >= refused[key] {
				lm.errors.Add(float64(r - refused[key]))
			}
			refused[key] = st.Refused[key]
		}
		s.mu.Unlock()
		var keys []string
		for key, on := range flooded {
			if on {
				keys = append(keys, key)
			}
		}
		if err := s.nat.Flood(keys); err != nil {
			s.log.Warn("cannot answer flooded listeners' SYNs with SYN cookies", "err", err)
		}
		maps.DeleteFunc(flooded, func(k string, _ bool) bool { _, ok := st.Members[k]; return !ok })
		maps.DeleteFunc(cookies, func(k string, _ uint64) bool { _, ok := st.Members[k]; return !ok })
		maps.DeleteFunc(seen, func(k string, _ nat.Counts) bool {
			l, m, _ := strings.Cut(k, "\x00")
			_, ok := st.Members[l][m]
			return !ok
		})
	}
}
