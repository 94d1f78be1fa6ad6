package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dataplane's Prometheus metrics, named after Octavia's statistics
// (bytes_in, bytes_out, active_connections, total_connections, request_errors) per listener
// and per member, plus member health and the datagrams the kernel dropped before a UDP
// listener could take them.
type Metrics struct {
	bytesIn, bytesOut, total, errors *prometheus.CounterVec
	dropped                          *prometheus.CounterVec
	active, inKernel                 *prometheus.GaugeVec
	memberBytesIn, memberBytesOut    *prometheus.CounterVec
	memberTotal, memberErrors        *prometheus.CounterVec
	memberActive, memberUp           *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := []string{"listener"}
	m := []string{"pool", "member", "address"}
	c := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "l4lb", Name: name, Help: help}, labels)
	}
	g := func(name, help string, labels []string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "l4lb", Name: name, Help: help}, labels)
	}
	x := &Metrics{
		bytesIn:        c("listener_bytes_in_total", "Bytes received from clients.", l),
		bytesOut:       c("listener_bytes_out_total", "Bytes sent to clients.", l),
		total:          c("listener_connections_total", "Connections (UDP: sessions) accepted.", l),
		errors:         c("listener_request_errors_total", "Connections refused or failed: not allowed, over the limit, no member.", l),
		active:         g("listener_active_connections", "Open connections (UDP: sessions).", l),
		dropped:        c("listener_datagrams_dropped_total", "UDP datagrams the kernel dropped on a full listener socket queue.", l),
		inKernel:       g("listener_in_kernel", "1 when the kernel carries the listener (nftables NAT), 0 when the proxy does.", l),
		memberBytesIn:  c("member_bytes_in_total", "Bytes sent to the member.", m),
		memberBytesOut: c("member_bytes_out_total", "Bytes received from the member.", m),
		memberTotal:    c("member_connections_total", "Connections made to the member.", m),
		memberErrors:   c("member_connection_errors_total", "Failed connects to the member.", m),
		memberActive:   g("member_active_connections", "Open connections to the member.", m),
		memberUp:       g("member_up", "1 when the member passes its health monitor (or has none).", m),
	}
	if reg != nil {
		reg.MustRegister(x.bytesIn, x.bytesOut, x.total, x.errors, x.active, x.dropped, x.inKernel,
			x.memberBytesIn, x.memberBytesOut, x.memberTotal, x.memberErrors, x.memberActive, x.memberUp)
	}
	return x
}

// listenerMetrics are one listener's series, looked up once so connections touch no map.
type listenerMetrics struct {
	bytesIn, bytesOut, total, errors prometheus.Counter
	dropped                          prometheus.Counter
	active                           prometheus.Gauge
}

func (x *Metrics) listener(key string) *listenerMetrics {
	return &listenerMetrics{
		bytesIn: x.bytesIn.WithLabelValues(key), bytesOut: x.bytesOut.WithLabelValues(key),
		total: x.total.WithLabelValues(key), errors: x.errors.WithLabelValues(key),
		active: x.active.WithLabelValues(key), dropped: x.dropped.WithLabelValues(key),
	}
}

func (x *Metrics) forgetListener(key string) {
	for _, v := range []*prometheus.CounterVec{x.bytesIn, x.bytesOut, x.total, x.errors, x.dropped} {
		v.DeleteLabelValues(key)
	}
	x.active.DeleteLabelValues(key)
	x.inKernel.DeleteLabelValues(key)
}

type memberMetrics struct {
	bytesIn, bytesOut, total, errors prometheus.Counter
	active, up                       prometheus.Gauge
}

func (x *Metrics) member(pool, name, addr string) *memberMetrics {
	return &memberMetrics{
		bytesIn: x.memberBytesIn.WithLabelValues(pool, name, addr), bytesOut: x.memberBytesOut.WithLabelValues(pool, name, addr),
		total: x.memberTotal.WithLabelValues(pool, name, addr), errors: x.memberErrors.WithLabelValues(pool, name, addr),
		active: x.memberActive.WithLabelValues(pool, name, addr), up: x.memberUp.WithLabelValues(pool, name, addr),
	}
}

func (x *Metrics) forgetMember(pool, name, addr string) {
	for _, v := range []*prometheus.CounterVec{x.memberBytesIn, x.memberBytesOut, x.memberTotal, x.memberErrors} {
		v.DeleteLabelValues(pool, name, addr)
	}
	x.memberActive.DeleteLabelValues(pool, name, addr)
	x.memberUp.DeleteLabelValues(pool, name, addr)
}
