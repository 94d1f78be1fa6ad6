package octavia

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Stats are Octavia's statistics of a listener, or of a load balancer (its listeners' sum).
type Stats struct {
	BytesIn           int64 `json:"bytes_in"`
	BytesOut          int64 `json:"bytes_out"`
	ActiveConnections int64 `json:"active_connections"`
	TotalConnections  int64 `json:"total_connections"`
	RequestErrors     int64 `json:"request_errors"`
}

func (s *Stats) add(o Stats) {
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	s.ActiveConnections += o.ActiveConnections
	s.TotalConnections += o.TotalConnections
	s.RequestErrors += o.RequestErrors
}

// Statistics reads what the dataplane of a node counted, by listener (namespace/name).
type Statistics func(ctx context.Context, node string) (map[string]Stats, error)

// The dataplane's series that carry Octavia's statistics (dataplane/proxy/metrics.go).
var statSeries = map[string]func(*Stats, int64){
	"l4lb_listener_bytes_in_total":       func(s *Stats, v int64) { s.BytesIn = v },
	"l4lb_listener_bytes_out_total":      func(s *Stats, v int64) { s.BytesOut = v },
	"l4lb_listener_active_connections":   func(s *Stats, v int64) { s.ActiveConnections = v },
	"l4lb_listener_connections_total":    func(s *Stats, v int64) { s.TotalConnections = v },
	"l4lb_listener_request_errors_total": func(s *Stats, v int64) { s.RequestErrors = v },
}

// AgentMetrics reads a node's statistics from its dataplane agent's metrics endpoint, as
// Prometheus would scrape it. Only the node that holds a VIP serves its listeners, so one
// agent has all of a load balancer's figures; they count from that agent's start, as
// Octavia's count from its amphora's.
type AgentMetrics struct {
	Client    client.Client     // finds the agent's pod on the node
	Namespace string            // the agents' namespace
	Selector  map[string]string // the agents' pod labels
	Port      int
	// Token, when set, authenticates the request (the agents' endpoint is HTTPS and admits
	// clients Kubernetes authorises to get /metrics); nil speaks plain HTTP.
	Token func() (string, error)
	// HTTP makes the request (default: 5 s, the agents' certificates are their own
	// self-signed ones, so they are not verified).
	HTTP *http.Client
}

// Node implements Statistics.
func (a *AgentMetrics) Node(ctx context.Context, node string) (map[string]Stats, error) {
	var pods corev1.PodList
	if err := a.Client.List(ctx, &pods, client.InNamespace(a.Namespace), client.MatchingLabels(a.Selector),
		client.MatchingFields{"spec.nodeName": node}); err != nil {
		return nil, fmt.Errorf("finding the dataplane agent of node %s: %w", node, err)
	}
	ip := ""
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			ip = p.Status.PodIP
		}
	}
	if ip == "" {
		return nil, fmt.Errorf("no running dataplane agent on node %s", node)
	}
	scheme := "http"
	if a.Token != nil {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(ip, strconv.Itoa(a.Port))+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	if a.Token != nil {
		tok, err := a.Token()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the dataplane agent of node %s: %w", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the dataplane agent of node %s answered %s", node, resp.Status)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("the dataplane agent of node %s: %w", node, err)
	}
	out := map[string]Stats{}
	for name, set := range statSeries {
		f := families[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "listener" {
					key = l.GetValue()
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			st := out[key]
			set(&st, int64(v))
			out[key] = st
		}
	}
	return out, nil
}

// stats answers a load balancer's or a listener's statistics: what the node holding the
// load balancer's VIP counted (zero while none holds it).
func (s *Server) stats(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		v, o, err := s.found(r, c, k)
		if err != nil {
			return err
		}
		lb, ok := o.(*lbv1.LoadBalancer)
		listeners := []*lbv1.Listener{}
		if ok {
			listeners = v.listenersOf(lb)
		} else {
			l := o.(*lbv1.Listener)
			listeners = append(listeners, l)
			lb = v.lbNamed(l.Namespace, l.Spec.LoadBalancerRef.Name)
		}
		var sum Stats
		if lb != nil && lb.Status.Holder != "" {
			if s.Stats == nil {
				return &apiError{http.StatusNotImplemented, "statistics are not configured on this server"}
			}
			byListener, err := s.Stats(r.Context(), lb.Status.Holder)
			if err != nil {
				s.Log.Warn("reading statistics", "loadbalancer", lb.Namespace+"/"+lb.Name, "error", err)
				return &apiError{http.StatusServiceUnavailable, "the statistics are unavailable: " + err.Error()}
			}
			for _, l := range listeners {
				sum.add(byListener[l.Namespace+"/"+l.Name])
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"stats": sum})
		return nil
	}
}
