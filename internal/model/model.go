// Package model is the one description of what the dataplane serves, built from the l4lb
// objects. It is pure (no I/O, no clients): the controller uses it to validate and report
// conditions, the dataplane agent and the standalone mode use it to program the proxy, so all
// three agree on what a set of objects means.
package model

import (
	"net/netip"
	"slices"
	"time"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// DefaultConnectionLimit is what connectionLimit -1 means, as on Octavia's amphora.
const DefaultConnectionLimit = 50000

// Protocol is a listener's protocol. The model's enums are the API's, so the two cannot drift.
type Protocol = lbv1.ListenerProtocol

const (
	TCP = lbv1.ListenerTCP
	UDP = lbv1.ListenerUDP
)

// Model is everything one dataplane serves.
type Model struct {
	// Listeners, sorted by Key.
	Listeners []Listener
}

// Listener is an address and port served with one pool.
type Listener struct {
	Key          string // namespace/name of the Listener object
	LoadBalancer string // namespace/name of its LoadBalancer
	Protocol     Protocol
	Address      netip.AddrPort // the VIP and protocolPort

	// ConnectionLimit is the resolved limit (-1 is already DefaultConnectionLimit).
	ConnectionLimit int
	// Unlimited says connectionLimit was -1 or left out: "unlimited" in Octavia's API, which
	// its amphora's HAProxy (and l4lb's proxy) caps at DefaultConnectionLimit. The kernel
	// path leaves such a listener uncapped (the conntrack table bounds it), since the kernel's
	// count of a listener's connections costs each new one a walk over them.
	Unlimited            bool
	TimeoutClientData    time.Duration
	TimeoutMemberConnect time.Duration
	TimeoutMemberData    time.Duration
	TimeoutTCPInspect    time.Duration
	// AllowedCIDRs, when not empty, are the only sources let in.
	AllowedCIDRs []netip.Prefix

	// Pool is nil when no usable pool is attached: connections are then refused.
	Pool *Pool
	// Local: its load balancer's trafficPolicy is Local; a node serves only its own members
	// (LocalTo).
	Local bool
}

// Allowed reports whether a client address may connect.
func (l *Listener) Allowed(a netip.Addr) bool {
	if len(l.AllowedCIDRs) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range l.AllowedCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PoolProtocol is how the dataplane talks to members.
type PoolProtocol = lbv1.PoolProtocol

const (
	PoolTCP     = lbv1.PoolTCP
	PoolUDP     = lbv1.PoolUDP
	PoolPROXY   = lbv1.PoolPROXY
	PoolPROXYV2 = lbv1.PoolPROXYV2
)

// Algorithm chooses a member for a new connection.
type Algorithm = lbv1.LBAlgorithm

const (
	RoundRobin       = lbv1.RoundRobin
	LeastConnections = lbv1.LeastConnections
	SourceIP         = lbv1.SourceIP
	SourceIPPort     = lbv1.SourceIPPort
)

// Pool is the members behind a listener.
type Pool struct {
	Key         string // namespace/name of the Pool object
	Protocol    PoolProtocol
	Algorithm   Algorithm
	Persistence *Persistence
	// Members sorted by Name; members with adminStateUp false are kept (they report OFFLINE)
	// but never chosen.
	Members []Member
	// Monitor is nil without a (enabled) health monitor: members are then NO_MONITOR and
	// always eligible.
	Monitor *Monitor
}

// Persistence is SOURCE_IP session persistence.
type Persistence struct {
	Timeout time.Duration
	// Bits is the prefix length of the persistenceGranularity netmask.
	Bits int
}

// Member is one back-end.
type Member struct {
	Name         string
	Address      netip.AddrPort
	Weight       int // 0-256; 0 drains
	Backup       bool
	AdminStateUp bool
	// MonitorAddress is where checks go: monitorAddress/monitorPort or Address.
	MonitorAddress netip.AddrPort
	// Node is the node the member runs on, when known.
	Node string
}

// LocalTo is m as node serves it: the pools of Local listeners keep only node's members.
func (m Model) LocalTo(node string) Model {
	out := m
	out.Listeners = slices.Clone(m.Listeners)
	for i := range out.Listeners {
		l := &out.Listeners[i]
		if !l.Local || l.Pool == nil {
			continue
		}
		p := *l.Pool
		p.Members = slices.DeleteFunc(slices.Clone(p.Members), func(mm Member) bool { return mm.Node != node })
		l.Pool = &p
	}
	return out
}

// MonitorType is how members are checked.
type MonitorType = lbv1.MonitorType

const (
	MonitorTCP        = lbv1.MonitorTCP
	MonitorHTTP       = lbv1.MonitorHTTP
	MonitorHTTPS      = lbv1.MonitorHTTPS
	MonitorTLSHello   = lbv1.MonitorTLSHello
	MonitorUDPConnect = lbv1.MonitorUDPConnect
	MonitorPing       = lbv1.MonitorPing
)

// Monitor is a pool's health monitor.
type Monitor struct {
	Type    MonitorType
	Delay   time.Duration
	Timeout time.Duration
	// Rise is maxRetries: consecutive successes before a member is up.
	Rise int
	// Fall is maxRetriesDown: consecutive failures before a member is down.
	Fall          int
	HTTPMethod    string
	URLPath       string
	ExpectedCodes Codes
	HTTPVersion   string
	DomainName    string
}
