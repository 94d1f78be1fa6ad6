package model

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Objects are the l4lb objects a model is built from.
type Objects struct {
	LoadBalancers []lbv1.LoadBalancer
	Listeners     []lbv1.Listener
	Pools         []lbv1.Pool
	Monitors      []lbv1.HealthMonitor
	// Policy is which addresses members, monitors and VIPs may have.
	Policy Policy
}

// Ref names one l4lb object.
type Ref struct {
	Kind      string // LoadBalancer, Listener, Pool or HealthMonitor
	Namespace string
	Name      string
}

func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Problem is why an object is not accepted; Reason is one of the api's condition reasons.
type Problem struct {
	Reason  string
	Message string
}

// Result is a built model and the problems found on the way. An object with a problem is
// left out of the model; everything else is still served.
type Result struct {
	Model    Model
	Problems map[Ref]Problem
	// Refused are the members each pool serves without, by pool; the rest of the pool serves.
	Refused map[Ref][]RefusedMember
}

// RefusedMember is a member left out of its pool, and why.
type RefusedMember struct {
	Name   string
	Reason string
}

// Build turns objects into the model. The VIP of a load balancer is its status.vipAddress:
// the controller allocates it, and nothing is served before it has. Objects being deleted are
// left out, so their traffic stops.
func Build(objs Objects) Result {
	res := Result{Problems: map[Ref]Problem{}, Refused: map[Ref][]RefusedMember{}}
	b := builder{res: &res}

	lbs := map[string]*lbv1.LoadBalancer{}
	for i := range objs.LoadBalancers {
		lb := &objs.LoadBalancers[i]
		if lb.DeletionTimestamp.IsZero() {
			lbs[key(lb.Namespace, lb.Name)] = lb
		}
	}

	// Listeners: oldest first, so when two claim one port the newer is refused and the
	// older keeps serving.
	listeners := alive(objs.Listeners, func(l *lbv1.Listener) metav1.Object { return l },
		func(l *lbv1.Listener) bool { return accepted(l.Status.Conditions) })
	byKey := map[string]*Listener{}
	listenerObjs := map[string]*lbv1.Listener{}
	ports := map[string]string{}
	served := map[string]string{} // protocol and VIP:port -> the listener serving it, cluster-wide
	exists := map[Ref]bool{}
	for k := range lbs {
		exists[Ref{"LoadBalancer", lbs[k].Namespace, lbs[k].Name}] = true
	}
	for _, l := range listeners {
		exists[Ref{"Listener", l.Namespace, l.Name}] = true
	}
	for _, p := range objs.Pools {
		exists[Ref{"Pool", p.Namespace, p.Name}] = true
	}
	for _, l := range listeners {
		ref := Ref{"Listener", l.Namespace, l.Name}
		lb, ok := lbs[key(l.Namespace, l.Spec.LoadBalancerRef.Name)]
		if !ok {
			b.problem(ref, lbv1.ReasonReferenceNotFound, "LoadBalancer %q not found", l.Spec.LoadBalancerRef.Name)
			continue
		}
		port := fmt.Sprintf("%s/%s/%d", key(lb.Namespace, lb.Name), l.Spec.Protocol, l.Spec.ProtocolPort)
		if other, taken := ports[port]; taken {
			b.problem(ref, lbv1.ReasonPortConflict, "%s port %d of LoadBalancer %q is already used by Listener %q", l.Spec.Protocol, l.Spec.ProtocolPort, lb.Name, other)
			continue
		}
		ports[port] = l.Name
		ml, err := listener(l)
		if err != nil {
			b.problem(ref, lbv1.ReasonInvalid, "%v", err)
			continue
		}
		ml.LoadBalancer = key(lb.Namespace, lb.Name)
		ml.Local = lb.Spec.TrafficPolicy == lbv1.TrafficLocal
		listenerObjs[ml.Key] = l
		if !enabled(lb.Spec.AdminStateUp) || !enabled(l.Spec.AdminStateUp) {
			continue
		}
		vip, err := netip.ParseAddr(lb.Status.VIPAddress)
		if err != nil {
			continue // no VIP yet: accepted, not served
		}
		if why := objs.Policy.VIPRefused(vip); why != "" {
			b.problem(ref, lbv1.ReasonAddressRefused, "the VIP of LoadBalancer %q is refused: %s", lb.Name, why)
			continue
		}
		ml.Address = netip.AddrPortFrom(vip, uint16(l.Spec.ProtocolPort))
		// One listener per address, protocol and port in the whole cluster: the older keeps
		// it, whatever namespaces they are in, so the dataplane never binds both.
		at := fmt.Sprintf("%s %s", ml.Protocol, ml.Address)
		if other, taken := served[at]; taken {
			delete(listenerObjs, ml.Key)
			b.problem(ref, lbv1.ReasonPortConflict, "%s is already served by Listener %s", at, other)
			continue
		}
		served[at] = ml.Key
		byKey[ml.Key] = &ml
	}

	pools := alive(objs.Pools, func(p *lbv1.Pool) metav1.Object { return p },
		func(p *lbv1.Pool) bool { return accepted(p.Status.Conditions) })
	poolByKey := map[string]*Pool{}
	poolOwner := map[string]string{}
	for _, p := range pools {
		ref := Ref{"Pool", p.Namespace, p.Name}
		if lbRef := p.Spec.LoadBalancerRef; lbRef != nil {
			if _, ok := lbs[key(p.Namespace, lbRef.Name)]; !ok {
				b.missing(ref, exists, Ref{"LoadBalancer", p.Namespace, lbRef.Name})
				continue
			}
		}
		lk := key(p.Namespace, p.Spec.ListenerName())
		lo := listenerObjs[lk]
		if p.Spec.ListenerRef != nil {
			if lo == nil {
				b.missing(ref, exists, Ref{"Listener", p.Namespace, p.Spec.ListenerRef.Name})
				continue
			}
			if lbRef := p.Spec.LoadBalancerRef; lbRef != nil && lo.Spec.LoadBalancerRef.Name != lbRef.Name {
				b.problem(ref, lbv1.ReasonInvalid, "Listener %q is on LoadBalancer %q, not on this pool's %q", lo.Name, lo.Spec.LoadBalancerRef.Name, lbRef.Name)
				continue
			}
			if !PoolFits(Protocol(lo.Spec.Protocol), PoolProtocol(p.Spec.Protocol)) {
				b.problem(ref, lbv1.ReasonProtocolMismatch, "a %s pool cannot serve %s Listener %q", p.Spec.Protocol, lo.Spec.Protocol, lo.Name)
				continue
			}
			if other, taken := poolOwner[lk]; taken {
				b.problem(ref, lbv1.ReasonDuplicate, "Listener %q already has Pool %q", lo.Name, other)
				continue
			}
		}
		mp, refused, err := pool(p, objs.Policy)
		if err != nil {
			b.problem(ref, lbv1.ReasonInvalid, "%v", err)
			continue
		}
		if len(refused) > 0 {
			res.Refused[ref] = refused
		}
		poolByKey[mp.Key] = &mp
		if lo == nil {
			continue // on its load balancer, serving no listener yet
		}
		poolOwner[lk] = p.Name
		if l, served := byKey[lk]; served && enabled(p.Spec.AdminStateUp) {
			l.Pool = &mp
		}
	}

	monitors := alive(objs.Monitors, func(m *lbv1.HealthMonitor) metav1.Object { return m },
		func(m *lbv1.HealthMonitor) bool { return accepted(m.Status.Conditions) })
	monitored := map[string]string{}
	for _, m := range monitors {
		ref := Ref{"HealthMonitor", m.Namespace, m.Name}
		pk := key(m.Namespace, m.Spec.PoolRef.Name)
		p, ok := poolByKey[pk]
		if !ok {
			b.missing(ref, exists, Ref{"Pool", m.Namespace, m.Spec.PoolRef.Name})
			continue
		}
		if !MonitorFits(p.Protocol, MonitorType(m.Spec.Type)) {
			b.problem(ref, lbv1.ReasonProtocolMismatch, "a %s monitor cannot check %s Pool %q", m.Spec.Type, p.Protocol, m.Spec.PoolRef.Name)
			continue
		}
		if other, taken := monitored[pk]; taken {
			b.problem(ref, lbv1.ReasonDuplicate, "Pool %q already has HealthMonitor %q", m.Spec.PoolRef.Name, other)
			continue
		}
		mm, err := monitor(m)
		if err != nil {
			b.problem(ref, lbv1.ReasonInvalid, "%v", err)
			continue
		}
		monitored[pk] = m.Name
		if enabled(m.Spec.AdminStateUp) {
			p.Monitor = &mm
		}
	}

	for _, l := range byKey {
		res.Model.Listeners = append(res.Model.Listeners, *l)
	}
	sort.Slice(res.Model.Listeners, func(i, j int) bool { return res.Model.Listeners[i].Key < res.Model.Listeners[j].Key })
	return res
}

// PoolLoadBalancer is the name of the load balancer pool p belongs to: its loadBalancerRef,
// else its listener's (a pool written before pools named their load balancer); "" when
// neither is known. For many pools, Trees finds them all at once.
func PoolLoadBalancer(p *lbv1.Pool, listeners []lbv1.Listener) string {
	if p.Spec.LoadBalancerRef != nil {
		return p.Spec.LoadBalancerRef.Name
	}
	for i := range listeners {
		if l := &listeners[i]; l.Namespace == p.Namespace && l.Name == p.Spec.ListenerName() {
			return l.Spec.LoadBalancerRef.Name
		}
	}
	return ""
}

// Trees are the objects of each load balancer (by namespace/name): its listeners, its pools
// (PoolLoadBalancer's rule) and the health monitors of those pools, in objs' order. Built
// once for whoever looks at every load balancer: pool by pool, finding a load balancer
// through the listeners is a scan of them all.
type Trees struct {
	Listeners map[string][]*lbv1.Listener
	Pools     map[string][]*lbv1.Pool
	Monitors  map[string][]*lbv1.HealthMonitor
}

// TreesOf groups objs by load balancer. The pointers point into objs.
func TreesOf(objs Objects) Trees {
	t := Trees{Listeners: map[string][]*lbv1.Listener{}, Pools: map[string][]*lbv1.Pool{}, Monitors: map[string][]*lbv1.HealthMonitor{}}
	lbOfListener := map[string]string{}
	for i := range objs.Listeners {
		l := &objs.Listeners[i]
		lbOfListener[key(l.Namespace, l.Name)] = l.Spec.LoadBalancerRef.Name
		k := key(l.Namespace, l.Spec.LoadBalancerRef.Name)
		t.Listeners[k] = append(t.Listeners[k], l)
	}
	lbOfPool := map[string]string{}
	for i := range objs.Pools {
		p := &objs.Pools[i]
		lb := ""
		if p.Spec.LoadBalancerRef != nil {
			lb = p.Spec.LoadBalancerRef.Name
		} else if n := p.Spec.ListenerName(); n != "" {
			lb = lbOfListener[key(p.Namespace, n)]
		}
		lbOfPool[key(p.Namespace, p.Name)] = lb
		if lb != "" {
			t.Pools[key(p.Namespace, lb)] = append(t.Pools[key(p.Namespace, lb)], p)
		}
	}
	for i := range objs.Monitors {
		m := &objs.Monitors[i]
		if lb := lbOfPool[key(m.Namespace, m.Spec.PoolRef.Name)]; lb != "" {
			t.Monitors[key(m.Namespace, lb)] = append(t.Monitors[key(m.Namespace, lb)], m)
		}
	}
	return t
}

// MemberNodes are, by load balancer (namespace/name), the nodes its pools' members run on
// (their nodeName) among members that take traffic: where a trafficPolicy Local load balancer
// may be held.
func MemberNodes(objs Objects) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for k, pools := range TreesOf(objs).Pools {
		for _, p := range pools {
			for _, m := range p.Spec.Members {
				if m.NodeName == "" || !enabled(m.AdminStateUp) || (m.Weight != nil && *m.Weight == 0) {
					continue
				}
				if out[k] == nil {
					out[k] = map[string]bool{}
				}
				out[k][m.NodeName] = true
			}
		}
	}
	return out
}

// PoolFits is Octavia's listener -> pool protocol compatibility.
func PoolFits(l Protocol, p PoolProtocol) bool {
	if l == UDP {
		return p == PoolUDP
	}
	return p == PoolTCP || p == PoolPROXY || p == PoolPROXYV2
}

// MonitorFits is Octavia's pool -> monitor compatibility.
func MonitorFits(p PoolProtocol, m MonitorType) bool {
	if p == PoolUDP {
		return m == MonitorUDPConnect || m == MonitorTCP || m == MonitorHTTP
	}
	return m != MonitorUDPConnect
}

type builder struct{ res *Result }

func (b builder) problem(ref Ref, reason, format string, args ...any) {
	b.res.Problems[ref] = Problem{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// missing reports a reference to an object that is absent, or present but not accepted.
func (b builder) missing(ref Ref, exists map[Ref]bool, target Ref) {
	if exists[target] {
		b.problem(ref, lbv1.ReasonReferenceNotFound, "%s %q is not accepted", target.Kind, target.Name)
		return
	}
	b.problem(ref, lbv1.ReasonReferenceNotFound, "%s %q not found", target.Kind, target.Name)
}

func accepted(conds []metav1.Condition) bool {
	for _, c := range conds {
		if c.Type == lbv1.ConditionAccepted {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

func key(namespace, name string) string { return namespace + "/" + name }

func enabled(b *bool) bool { return b == nil || *b }

// alive returns pointers to the objects not being deleted, oldest first, so conflicts are
// settled in favour of what was there before. Creation times have one-second resolution, so
// within a second the incumbent (already accepted) comes first, then names decide.
func alive[T any](items []T, meta func(*T) metav1.Object, incumbent func(*T) bool) []*T {
	// What the order compares is read once per object, not at each of the sort's
	// comparisons, n log n of them (docs/benchmarks.md, "Scale", has what that cost).
	type entry struct {
		created   time.Time // seconds
		incumbent bool
		key       string
		obj       *T
	}
	entries := make([]entry, 0, len(items))
	for i := range items {
		m := meta(&items[i])
		if m.GetDeletionTimestamp().IsZero() {
			entries = append(entries, entry{m.GetCreationTimestamp().Time, incumbent(&items[i]), key(m.GetNamespace(), m.GetName()), &items[i]})
		}
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		if a.incumbent != b.incumbent {
			if a.incumbent {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	out := make([]*T, len(entries))
	for i := range entries {
		out[i] = entries[i].obj
	}
	return out
}

func duration(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func listener(l *lbv1.Listener) (Listener, error) {
	limit := DefaultConnectionLimit
	if l.Spec.ConnectionLimit != nil && *l.Spec.ConnectionLimit >= 0 {
		limit = int(*l.Spec.ConnectionLimit)
	}
	ml := Listener{
		Key:                  key(l.Namespace, l.Name),
		Protocol:             Protocol(l.Spec.Protocol),
		ConnectionLimit:      limit,
		Unlimited:            l.Spec.ConnectionLimit == nil || *l.Spec.ConnectionLimit < 0,
		TimeoutClientData:    duration(l.Spec.TimeoutClientData, 50*time.Second),
		TimeoutMemberConnect: duration(l.Spec.TimeoutMemberConnect, 5*time.Second),
		TimeoutMemberData:    duration(l.Spec.TimeoutMemberData, 50*time.Second),
		TimeoutTCPInspect:    duration(l.Spec.TimeoutTCPInspect, 0),
	}
	if ml.Protocol != TCP && ml.Protocol != UDP {
		return ml, fmt.Errorf("protocol %q is not TCP or UDP", l.Spec.Protocol)
	}
	if l.Spec.ProtocolPort < 1 || l.Spec.ProtocolPort > 65535 {
		return ml, fmt.Errorf("protocolPort %d is not between 1 and 65535", l.Spec.ProtocolPort)
	}
	cidrs, err := ParseCIDRs(l.Spec.AllowedCIDRs)
	if err != nil {
		return ml, err
	}
	ml.AllowedCIDRs = cidrs
	return ml, nil
}

// ParseCIDRs parses allowedCIDRs; an entry with host bits set is refused, as Octavia does.
func ParseCIDRs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allowedCIDRs[%d]: %q is not a CIDR", i, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// pool translates p; members whose addresses policy refuses are left out, and returned.
func pool(p *lbv1.Pool, policy Policy) (Pool, []RefusedMember, error) {
	mp := Pool{
		Key:       key(p.Namespace, p.Name),
		Protocol:  PoolProtocol(p.Spec.Protocol),
		Algorithm: Algorithm(p.Spec.LBAlgorithm),
	}
	var refused []RefusedMember
	switch mp.Algorithm {
	case RoundRobin, LeastConnections, SourceIP, SourceIPPort:
	default:
		return mp, nil, fmt.Errorf("lbAlgorithm %q is not ROUND_ROBIN, LEAST_CONNECTIONS, SOURCE_IP or SOURCE_IP_PORT", p.Spec.LBAlgorithm)
	}
	if sp := p.Spec.SessionPersistence; sp != nil {
		if sp.Type != lbv1.PersistenceSourceIP {
			return mp, nil, fmt.Errorf("sessionPersistence.type %q is not SOURCE_IP", sp.Type)
		}
		bits := 32
		if sp.PersistenceGranularity != "" {
			mask, err := netip.ParseAddr(sp.PersistenceGranularity)
			if err != nil {
				return mp, nil, fmt.Errorf("sessionPersistence.persistenceGranularity %q is not a netmask", sp.PersistenceGranularity)
			}
			if bits, err = maskBits(mask); err != nil {
				return mp, nil, fmt.Errorf("sessionPersistence.persistenceGranularity: %v", err)
			}
		}
		mp.Persistence = &Persistence{Timeout: duration(sp.PersistenceTimeout, 360*time.Second), Bits: bits}
	}
	for i, m := range p.Spec.Members {
		addr, err := netip.ParseAddr(m.Address)
		if err != nil {
			return mp, nil, fmt.Errorf("members[%d].address %q is not an IP address", i, m.Address)
		}
		mm := Member{
			Name:         m.Name,
			Address:      netip.AddrPortFrom(addr.Unmap(), uint16(m.ProtocolPort)),
			Weight:       1,
			Backup:       m.Backup,
			AdminStateUp: enabled(m.AdminStateUp),
			Node:         m.NodeName,
		}
		if m.Weight != nil {
			mm.Weight = int(*m.Weight)
		}
		if mm.Weight < 0 || mm.Weight > 256 {
			return mp, nil, fmt.Errorf("members[%d].weight %d is not between 0 and 256", i, mm.Weight)
		}
		mm.MonitorAddress = mm.Address
		if m.MonitorAddress != "" {
			ma, err := netip.ParseAddr(m.MonitorAddress)
			if err != nil {
				return mp, nil, fmt.Errorf("members[%d].monitorAddress %q is not an IP address", i, m.MonitorAddress)
			}
			mm.MonitorAddress = netip.AddrPortFrom(ma.Unmap(), mm.MonitorAddress.Port())
		}
		if m.MonitorPort != nil {
			mm.MonitorAddress = netip.AddrPortFrom(mm.MonitorAddress.Addr(), uint16(*m.MonitorPort))
		}
		why := policy.MemberRefused(mm.Address.Addr())
		if why == "" {
			if why = policy.MemberRefused(mm.MonitorAddress.Addr()); why != "" {
				why = "monitor address " + why
			}
		}
		if why != "" {
			refused = append(refused, RefusedMember{Name: m.Name, Reason: why})
			continue
		}
		mp.Members = append(mp.Members, mm)
	}
	sort.Slice(mp.Members, func(i, j int) bool { return mp.Members[i].Name < mp.Members[j].Name })
	return mp, refused, nil
}

// maskBits turns a netmask such as 255.255.255.0 into its prefix length.
func maskBits(mask netip.Addr) (int, error) {
	b := mask.AsSlice()
	bits, ended := 0, false
	for _, x := range b {
		for i := 7; i >= 0; i-- {
			set := x&(1<<i) != 0
			if set && ended {
				return 0, fmt.Errorf("%s is not a contiguous netmask", mask)
			}
			if set {
				bits++
			} else {
				ended = true
			}
		}
	}
	return bits, nil
}

func monitor(m *lbv1.HealthMonitor) (Monitor, error) {
	mm := Monitor{
		Type:        MonitorType(m.Spec.Type),
		Delay:       m.Spec.Delay.Duration,
		Timeout:     m.Spec.Timeout.Duration,
		Rise:        int(m.Spec.MaxRetries),
		Fall:        int(m.Spec.MaxRetriesDown),
		HTTPMethod:  string(m.Spec.HTTPMethod),
		URLPath:     m.Spec.URLPath,
		HTTPVersion: string(m.Spec.HTTPVersion),
		DomainName:  m.Spec.DomainName,
	}
	if mm.Fall == 0 {
		mm.Fall = 3
	}
	if mm.HTTPMethod == "" {
		mm.HTTPMethod = "GET"
	}
	if mm.URLPath == "" {
		mm.URLPath = "/"
	}
	if mm.HTTPVersion == "" {
		mm.HTTPVersion = "1.0"
	}
	codes := m.Spec.ExpectedCodes
	if codes == "" {
		codes = "200"
	}
	var err error
	if mm.ExpectedCodes, err = ParseCodes(codes); err != nil {
		return mm, err
	}
	switch {
	case mm.Delay <= 0:
		return mm, fmt.Errorf("delay must be positive")
	case mm.Timeout <= 0:
		return mm, fmt.Errorf("timeout must be positive")
	case mm.Rise < 1 || mm.Rise > 10:
		return mm, fmt.Errorf("maxRetries %d is not between 1 and 10", mm.Rise)
	case mm.Fall < 1 || mm.Fall > 10:
		return mm, fmt.Errorf("maxRetriesDown %d is not between 1 and 10", mm.Fall)
	}
	return mm, nil
}
