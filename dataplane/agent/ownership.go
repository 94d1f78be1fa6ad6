package agent

import (
	"context"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/dataplane/nodes"
)

// Ownership decides which load balancers this node holds: the one node that rendezvous
// hashing picks for each VIP among the live dataplane nodes (nodes.Holder), and only while this
// node's own heartbeat is fresh, so a node cut off from the API server lets go of its VIPs
// before another takes them.
type Ownership struct {
	Heartbeat *nodes.Heartbeat
	Observer  *nodes.Observer
	Reader    client.Reader
	// Tick is how often holders are recomputed; lease expiries have no event.
	Tick time.Duration

	// Recorder, when set, gets an event on the LoadBalancer for every acquire and release.
	Recorder events.EventRecorder

	trigger func()
	mu      sync.Mutex
	held    map[string]bool

	heldGauge          prometheus.Gauge
	acquired, released prometheus.Counter
}

// NewOwnership registers the VIP ownership metrics with reg.
func NewOwnership(hb *nodes.Heartbeat, obs *nodes.Observer, r client.Reader, reg prometheus.Registerer) *Ownership {
	o := &Ownership{Heartbeat: hb, Observer: obs, Reader: r, Tick: hb.Timing.Renew / 2, held: map[string]bool{},
		heldGauge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "l4lb", Name: "vips_held", Help: "VIPs this node holds."}),
		acquired:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "l4lb", Name: "vip_acquisitions_total", Help: "VIPs this node took."}),
		released:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "l4lb", Name: "vip_releases_total", Help: "VIPs this node gave up."}),
	}
	if reg != nil {
		reg.MustRegister(o.heldGauge, o.acquired, o.released)
	}
	return o
}

// Held is the set of load balancers (namespace/name) this node holds now.
func (o *Ownership) Held() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.held)
}

// Start runs the heartbeat and recomputes the held set every tick, calling the agent when it
// changes. It is a manager Runnable.
func (o *Ownership) Start(ctx context.Context) error {
	go o.Heartbeat.Run(ctx)
	tick := time.NewTicker(o.Tick)
	defer tick.Stop()
	log := ctrl.LoggerFrom(ctx).WithName("vip-ownership")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		next, err := o.compute(ctx)
		if err != nil {
			log.Error(err, "computing VIP holders")
			continue
		}
		o.mu.Lock()
		changed := !maps.Equal(next, o.held)
		for k := range next {
			if !o.held[k] {
				o.acquired.Inc()
				log.Info("acquiring VIP", "loadBalancer", k, "node", o.Heartbeat.Node)
				o.event(ctx, k, "VIPAcquired", "node %s holds the VIP now")
			}
		}
		for k := range o.held {
			if !next[k] {
				o.released.Inc()
				log.Info("releasing VIP", "loadBalancer", k, "node", o.Heartbeat.Node)
				o.event(ctx, k, "VIPReleased", "node %s let the VIP go")
			}
		}
		o.held = next
		o.heldGauge.Set(float64(len(next)))
		o.mu.Unlock()
		if changed && o.trigger != nil {
			o.trigger()
		}
	}
}

func (o *Ownership) event(ctx context.Context, key, reason, format string) {
	if o.Recorder == nil {
		return
	}
	ns, name, _ := strings.Cut(key, "/")
	var lb lbv1.LoadBalancer
	if err := o.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &lb); err != nil {
		return
	}
	o.Recorder.Eventf(&lb, nil, "Normal", reason, "HoldVIP", format, o.Heartbeat.Node)
}

func (o *Ownership) compute(ctx context.Context) (map[string]bool, error) {
	held := map[string]bool{}
	if !o.Heartbeat.Healthy() {
		return held, nil // fenced: cut off from the API server, hold nothing
	}
	live, draining, err := o.Observer.Live(ctx)
	if err != nil {
		return nil, err
	}
	me := o.Heartbeat.Node
	if !contains(live, me) {
		live = append(live, me) // our own heartbeat is fresh, whatever the cache says yet
	}
	var lbs lbv1.LoadBalancerList
	if err := o.Reader.List(ctx, &lbs); err != nil {
		return nil, err
	}
	for _, lb := range lbs.Items {
		if lb.Status.VIPAddress == "" || !lb.DeletionTimestamp.IsZero() {
			continue
		}
		if nodes.Holder(lb.Status.VIPAddress, live, draining) == me {
			held[lb.Namespace+"/"+lb.Name] = true
		}
	}
	return held, nil
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
