package octavia

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/model"
)

func init() {
	writesOf[loadBalancers.plural] = writes{create: (*Server).createLB, update: updateLB, remove: (*Server).removeLB}
	writesOf[listeners.plural] = writes{create: (*Server).createListener, update: updateListener, remove: (*Server).removeListener}
	writesOf[pools.plural] = writes{create: (*Server).createPool, update: updatePool, remove: (*Server).removePool}
	writesOf[healthMonitors.plural] = writes{create: (*Server).createMonitor, update: updateMonitor, remove: (*Server).removeMonitor}
}

// make creates o under a name derived from its Octavia name, or that name with a suffix when
// it is taken.
//
// The Octavia name is kept even when empty: an object made without a name reads back without
// one (Terraform compares what it wrote).
func (s *Server) make(ctx context.Context, o client.Object, octaviaName, fallback string) error {
	o.SetName(k8sName(octaviaName, fallback))
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[NameAnnotation] = octaviaName
	o.SetAnnotations(a)
	err := s.Client.Create(ctx, o)
	if apierrors.IsAlreadyExists(err) {
		o.SetGenerateName(o.GetName() + "-")
		o.SetName("")
		err = s.Client.Create(ctx, o)
	}
	return err
}

// setName and setTags keep what the request says of the object's name and tags, null
// unsetting them.
func setName(o client.Object, in *input) {
	if in.present("name") {
		annotate(o, NameAnnotation, in.str("name"))
	}
}

func setTags(o client.Object, in *input) {
	if !in.present("tags") {
		return
	}
	tags := tagSet(in.strings("tags"))
	if len(tags) == 0 {
		annotate(o, TagsAnnotation, "")
		return
	}
	b, _ := json.Marshal(tags)
	annotate(o, TagsAnnotation, string(b))
}

// annotate sets (or, with an empty value, removes) an annotation.
func annotate(o client.Object, key, value string) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	if value == "" && key != NameAnnotation {
		delete(a, key)
	} else {
		a[key] = value
	}
	o.SetAnnotations(a)
}

// TagsAnnotation keeps an object's Octavia tags, a JSON list.
const TagsAnnotation = "lb.l4lb.io/octavia-tags"

// ProviderAnnotation keeps the provider a load balancer was asked for (amphora, octavia or
// l4lb, all served the same), so it reads back as written.
const ProviderAnnotation = "lb.l4lb.io/octavia-provider"

// tagsOf reads an object's tags.
// tagSet is tags as Octavia keeps them: a set (a row per tag), read back in order.
func tagSet(tags []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(tags)))
}

func tagsOf(o client.Object) []string {
	tags := []string{}
	if s := o.GetAnnotations()[TagsAnnotation]; s != "" {
		json.Unmarshal([]byte(s), &tags)
	}
	return tags
}

// Load balancers.

var lbUpdatable = []string{"name", "description", "admin_state_up", "tags"}

func (s *Server) createLB(ctx context.Context, c *caller, v *view, obj map[string]any) (client.Object, error) {
	in := newInput(obj, append(lbUpdatable, "vip_subnet_id", "vip_network_id", "vip_port_id", "vip_address",
		"provider", "project_id", "tenant_id", "listeners")...)
	lb := &lbv1.LoadBalancer{Spec: lbv1.LoadBalancerSpec{Description: in.str("description")}}
	in.boolPtr("admin_state_up", &lb.Spec.AdminStateUp)
	switch p := in.str("provider"); p {
	case "", Provider:
	case "amphora", "octavia":
		annotate(lb, ProviderAnnotation, p)
	default:
		in.fail("Provider '%s' is not enabled.", p)
	}
	setTags(lb, in)
	vip := lbv1.VIP{Subnet: in.str("vip_subnet_id"), Network: in.str("vip_network_id"), Port: in.str("vip_port_id"), Address: in.str("vip_address")}
	switch {
	case vip.Subnet != "" || vip.Network != "" || vip.Port != "":
		lb.Spec.Provider = lbv1.ProviderOpenStack
		lb.Spec.VIP = &vip
	case vip.Address != "":
		lb.Spec.VIP = &vip
	}
	nested := in.objects("listeners")
	project, err := writableProject(c, obj)
	if err != nil {
		return nil, err
	}
	if in.err != nil {
		return nil, in.err
	}
	ns, err := s.namespaceFor(ctx, project)
	if err != nil {
		return nil, err
	}
	lb.Namespace = ns
	if err := s.make(ctx, lb, in.str("name"), "lb"); err != nil {
		return nil, err
	}
	// A fully populated load balancer: its listeners, each with its default pool, its
	// members and its monitor, in one call.
	v.projects[ns] = project
	v.lbs = append(v.lbs, *lb)
	for _, l := range nested {
		if err := s.child(ctx, c, v, l, "loadbalancer_id", lb, (*Server).createListener); err != nil {
			// All or nothing: what this call made goes again, so a client's retry does not
			// find half a load balancer.
			if rerr := s.removeLB(ctx, v, lb, true); rerr != nil {
				s.Log.Error("removing a half-made load balancer", "namespace", lb.Namespace, "name", lb.Name, "err", rerr)
			}
			return nil, err
		}
	}
	return lb, nil
}

func updateLB(_ *Server, _ context.Context, v *view, o client.Object, obj map[string]any) error {
	lb := o.(*lbv1.LoadBalancer)
	in := newInput(obj, lbUpdatable...)
	setName(lb, in)
	setTags(lb, in)
	if in.present("description") {
		lb.Spec.Description = in.str("description")
	}
	in.boolPtr("admin_state_up", &lb.Spec.AdminStateUp)
	return in.err
}

func (s *Server) removeLB(ctx context.Context, v *view, o client.Object, cascade bool) error {
	lb := o.(*lbv1.LoadBalancer)
	ls := v.listenersOf(lb)
	ps := v.poolsOf(lb, ls)
	if len(ls)+len(ps) > 0 && !cascade {
		return badRequest("Cannot delete Load Balancer %s - it has children", lb.UID)
	}
	for _, p := range ps {
		if err := s.removePool(ctx, v, p, true); err != nil {
			return err
		}
	}
	for _, l := range ls {
		if err := client.IgnoreNotFound(s.Client.Delete(ctx, l)); err != nil {
			return err
		}
	}
	return client.IgnoreNotFound(s.Client.Delete(ctx, lb))
}

// Listeners.

var listenerUpdatable = []string{"name", "description", "admin_state_up", "tags", "connection_limit", "timeout_client_data",
	"timeout_member_connect", "timeout_member_data", "timeout_tcp_inspect", "allowed_cidrs"}

func (s *Server) createListener(ctx context.Context, c *caller, v *view, obj map[string]any) (client.Object, error) {
	in := newInput(obj, append(listenerUpdatable, "protocol", "protocol_port", "loadbalancer_id", "project_id", "tenant_id", "default_pool", "default_pool_id")...)
	if in.has("default_pool") && in.has("default_pool_id") {
		in.fail("Invalid input: default_pool and default_pool_id are exclusive")
	}
	lbObj := v.find(loadBalancers, in.str("loadbalancer_id"))
	if lbObj == nil && s.othersObject(ctx, c, loadBalancers, in.str("loadbalancer_id")) {
		return nil, forbidden()
	}
	if lbObj == nil {
		in.fail("Invalid input: loadbalancer_id %q is not a load balancer of this project", in.str("loadbalancer_id"))
	}
	l := &lbv1.Listener{Spec: lbv1.ListenerSpec{Protocol: lbv1.ListenerProtocol(in.oneOf("protocol", "TCP", "UDP"))}}
	if in.str("protocol") == "" {
		in.fail("Invalid input: protocol is required (TCP or UDP)")
	}
	port, ok := in.num("protocol_port")
	if !ok || port < 1 || port > 65535 {
		in.fail("Invalid input: protocol_port must be 1 to 65535")
	}
	l.Spec.ProtocolPort = port
	if err := applyListener(in, l); err != nil {
		return nil, err
	}
	if in.err != nil {
		return nil, in.err
	}
	lb := lbObj.(*lbv1.LoadBalancer)
	if _, err := writableProject(c, map[string]any{"project_id": v.projects[lb.Namespace]}); err != nil {
		return nil, err
	}
	if err := cidrsFit(lb, l.Spec.AllowedCIDRs); err != nil {
		return nil, err
	}
	for _, other := range v.listenersOf(lb) {
		if other.Spec.ProtocolPort == port && other.Spec.Protocol == l.Spec.Protocol {
			return nil, conflict("Another Listener on this Load Balancer is already using protocol %s and protocol_port %d", l.Spec.Protocol, port)
		}
	}
	l.Namespace = lb.Namespace
	l.Spec.LoadBalancerRef.Name = lb.Name
	var pool *lbv1.Pool
	if id := in.str("default_pool_id"); id != "" {
		var err error
		if pool, err = v.defaultPoolFor(l, id); err != nil {
			return nil, err
		}
	}
	if err := s.make(ctx, l, in.str("name"), "listener"); err != nil {
		return nil, err
	}
	v.ls = append(v.ls, *l)
	if pool != nil {
		if err := s.attach(ctx, pool, l); err != nil {
			if rerr := client.IgnoreNotFound(s.Client.Delete(ctx, l)); rerr != nil { // all or nothing
				s.Log.Error("removing a half-made listener", "namespace", l.Namespace, "name", l.Name, "err", rerr)
			}
			return nil, err
		}
	}
	return l, s.child(ctx, c, v, in.object("default_pool"), "listener_id", l, (*Server).createPool)
}

// cidrsFit refuses allowed CIDRs of another IP version than the VIP's, as Octavia does (such
// a CIDR could never match a client of that VIP). A VIP not allocated yet is not checked.
func cidrsFit(lb *lbv1.LoadBalancer, cidrs []string) error {
	vip := lb.Status.VIPAddress
	if vip == "" && lb.Spec.VIP != nil {
		vip = lb.Spec.VIP.Address
	}
	a, err := netip.ParseAddr(vip)
	if err != nil {
		return nil
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() != a.Is4() {
			return badRequest("Validation failure: CIDR %s IP version incompatible with VIP %s IP version.", c, vip)
		}
	}
	return nil
}

// poolFits refuses, in Octavia's words, a pool whose protocol listener l does not take.
func poolFits(l *lbv1.Listener, p *lbv1.Pool) error {
	if model.PoolFits(model.Protocol(l.Spec.Protocol), model.PoolProtocol(p.Spec.Protocol)) {
		return nil
	}
	return badRequest("Validation failure: The pool protocol '%s' is invalid while the listener protocol is '%s'.", p.Spec.Protocol, l.Spec.Protocol)
}

// defaultPoolFor checks that the pool with UID id may become l's default pool, as Octavia
// does: a pool of the same load balancer, of a protocol the listener takes, serving no other
// listener.
func (v *view) defaultPoolFor(l *lbv1.Listener, id string) (*lbv1.Pool, error) {
	o := v.find(pools, id)
	if o == nil {
		return nil, notFound(pools.what, id)
	}
	p := o.(*lbv1.Pool)
	if p.Namespace != l.Namespace || model.PoolLoadBalancer(p, v.ls) != l.Spec.LoadBalancerRef.Name {
		return nil, badRequest("Invalid input: pool %s is not on the listener's load balancer", id)
	}
	if err := poolFits(l, p); err != nil {
		return nil, err
	}
	if other := p.Spec.ListenerName(); other != "" && other != l.Name {
		if ol := v.listenerNamed(p.Namespace, other); ol != nil {
			return nil, conflict("Pool %s is already in use by listener %s", id, ol.UID)
		}
	}
	return p, nil
}

// attach makes p the default pool of l, and detach makes p serve no listener: the link is
// the pool's listenerRef. The pool keeps its load balancer either way (written down, for a
// pool that named only its listener).
func (s *Server) attach(ctx context.Context, p *lbv1.Pool, l *lbv1.Listener) error {
	return s.changePool(ctx, p, func(p *lbv1.Pool) error {
		p.Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: l.Spec.LoadBalancerRef.Name}
		p.Spec.ListenerRef = &lbv1.ObjectReference{Name: l.Name}
		return nil
	})
}

func (s *Server) detach(ctx context.Context, p *lbv1.Pool, l *lbv1.Listener) error {
	return client.IgnoreNotFound(s.changePool(ctx, p, func(p *lbv1.Pool) error {
		if p.Spec.ListenerName() != l.Name {
			return nil
		}
		p.Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: l.Spec.LoadBalancerRef.Name}
		p.Spec.ListenerRef = nil
		return nil
	}))
}

// child creates the object of a fully populated create (a listener's default_pool, a pool's
// healthmonitor) under parent, which it names by ref.
func (s *Server) child(ctx context.Context, c *caller, v *view, obj map[string]any, ref string, parent client.Object,
	create func(*Server, context.Context, *caller, *view, map[string]any) (client.Object, error)) error {
	if obj == nil {
		return nil
	}
	obj[ref] = string(parent.GetUID())
	_, err := create(s, ctx, c, v, obj)
	return err
}

func applyListener(in *input, l *lbv1.Listener) error {
	setName(l, in)
	setTags(l, in)
	if in.present("description") {
		l.Spec.Description = in.str("description")
	}
	in.boolPtr("admin_state_up", &l.Spec.AdminStateUp)
	if n, ok := in.num("connection_limit"); ok {
		l.Spec.ConnectionLimit = &n
	}
	for k, dst := range map[string]**metav1.Duration{
		"timeout_client_data": &l.Spec.TimeoutClientData, "timeout_member_connect": &l.Spec.TimeoutMemberConnect,
		"timeout_member_data": &l.Spec.TimeoutMemberData, "timeout_tcp_inspect": &l.Spec.TimeoutTCPInspect,
	} {
		if d := in.millis(k); d != nil {
			*dst = d
		}
	}
	if in.has("allowed_cidrs") {
		l.Spec.AllowedCIDRs = in.strings("allowed_cidrs")
	}
	return in.err
}

// updateListener also moves the listener's default pool (default_pool_id; null for none),
// which is written on the pools.
func updateListener(s *Server, ctx context.Context, v *view, o client.Object, obj map[string]any) error {
	l := o.(*lbv1.Listener)
	in := newInput(obj, append(listenerUpdatable, "default_pool_id")...)
	if err := applyListener(in, l); err != nil {
		return err
	}
	if lb := v.lbNamed(l.Namespace, l.Spec.LoadBalancerRef.Name); lb != nil && in.has("allowed_cidrs") {
		if err := cidrsFit(lb, l.Spec.AllowedCIDRs); err != nil {
			return err
		}
	}
	if !in.present("default_pool_id") {
		return nil
	}
	var next *lbv1.Pool
	if id := in.str("default_pool_id"); id != "" {
		var err error
		if next, err = v.defaultPoolFor(l, id); err != nil {
			return err
		}
	}
	if cur := v.poolOf(l); cur != nil && cur != next {
		if err := s.detach(ctx, cur, l); err != nil {
			return err
		}
	}
	if next == nil || next.Spec.ListenerName() == l.Name {
		return nil
	}
	return s.attach(ctx, next, l)
}

// removeListener deletes a listener; as in Octavia, its default pool stays on the load
// balancer.
func (s *Server) removeListener(ctx context.Context, v *view, o client.Object, _ bool) error {
	l := o.(*lbv1.Listener)
	if p := v.poolOf(l); p != nil {
		if err := s.detach(ctx, p, l); err != nil {
			return err
		}
	}
	return client.IgnoreNotFound(s.Client.Delete(ctx, l))
}

// Pools.

var poolUpdatable = []string{"name", "description", "admin_state_up", "tags", "lb_algorithm", "session_persistence"}

var algorithms = []string{string(lbv1.RoundRobin), string(lbv1.LeastConnections), string(lbv1.SourceIP), string(lbv1.SourceIPPort)}

func (s *Server) createPool(ctx context.Context, c *caller, v *view, obj map[string]any) (client.Object, error) {
	in := newInput(obj, append(poolUpdatable, "listener_id", "loadbalancer_id", "protocol", "project_id", "tenant_id", "members", "healthmonitor")...)
	lbID, lID := in.str("loadbalancer_id"), in.str("listener_id")
	if lbID == "" && lID == "" {
		in.fail("Invalid input: a pool needs a loadbalancer_id or a listener_id")
	}
	var l *lbv1.Listener
	var lb *lbv1.LoadBalancer
	if lID != "" {
		o := v.find(listeners, lID)
		if o == nil && s.othersObject(ctx, c, listeners, lID) {
			return nil, forbidden()
		}
		if o == nil {
			in.fail("Invalid input: listener_id %q is not a listener of this project", lID)
		} else {
			l = o.(*lbv1.Listener)
			lb = v.lbNamed(l.Namespace, l.Spec.LoadBalancerRef.Name)
		}
	}
	if lbID != "" {
		o := v.find(loadBalancers, lbID)
		if o == nil && s.othersObject(ctx, c, loadBalancers, lbID) {
			return nil, forbidden()
		}
		switch {
		case o == nil:
			in.fail("Invalid input: loadbalancer_id %q is not a load balancer of this project", lbID)
		case l != nil && (lb == nil || string(lb.UID) != lbID):
			in.fail("Invalid input: listener %s is not on load balancer %s", lID, lbID)
		default:
			lb = o.(*lbv1.LoadBalancer)
		}
	}
	proto := in.str("protocol")
	p := &lbv1.Pool{Spec: lbv1.PoolSpec{Protocol: lbv1.PoolProtocol(in.oneOf("protocol", "TCP", "UDP", "PROXY", "PROXYV2"))}}
	if proto == "" {
		in.fail("Invalid input: protocol is required (TCP, UDP, PROXY or PROXYV2)")
	}
	if in.str("lb_algorithm") == "" {
		in.fail("Invalid input: lb_algorithm is required")
	}
	if err := applyPool(in, p); err != nil {
		return nil, err
	}
	if in.err != nil {
		return nil, in.err
	}
	if lb == nil {
		return nil, badRequest("Invalid input: listener %s has no load balancer", lID)
	}
	if _, err := writableProject(c, map[string]any{"project_id": v.projects[lb.Namespace]}); err != nil {
		return nil, err
	}
	p.Namespace = lb.Namespace
	p.Spec.LoadBalancerRef = &lbv1.ObjectReference{Name: lb.Name}
	if l != nil {
		if other := v.poolOf(l); other != nil {
			return nil, conflict("Listener %s already has a default pool (%s)", l.UID, other.UID)
		}
		if err := poolFits(l, p); err != nil {
			return nil, err
		}
		p.Spec.ListenerRef = &lbv1.ObjectReference{Name: l.Name}
	}
	meta := map[string]memberMeta{}
	for _, m := range in.objects("members") {
		mm, err := memberFrom(m, p)
		if err != nil {
			return nil, err
		}
		p.Spec.Members = append(p.Spec.Members, mm)
		setMemberTags(m, meta, mm.Name)
	}
	setMembersMeta(p, meta)
	if err := s.checkMemberQuota(ctx, p, len(p.Spec.Members)); err != nil {
		return nil, err
	}
	if err := s.make(ctx, p, in.str("name"), "pool"); err != nil {
		return nil, err
	}
	v.ps = append(v.ps, *p)
	return p, s.child(ctx, c, v, in.object("healthmonitor"), "pool_id", p, (*Server).createMonitor)
}

func applyPool(in *input, p *lbv1.Pool) error {
	setName(p, in)
	setTags(p, in)
	if in.present("description") {
		p.Spec.Description = in.str("description")
	}
	in.boolPtr("admin_state_up", &p.Spec.AdminStateUp)
	if a := in.oneOf("lb_algorithm", algorithms...); a != "" {
		p.Spec.LBAlgorithm = lbv1.LBAlgorithm(a)
	}
	if in.present("session_persistence") && !in.has("session_persistence") {
		p.Spec.SessionPersistence = nil // null: none
	}
	if in.has("session_persistence") {
		sp := newInput(in.object("session_persistence"), "type", "persistence_timeout", "persistence_granularity")
		t := sp.oneOf("type", "SOURCE_IP")
		x := &lbv1.SessionPersistence{Type: lbv1.PersistenceType(t), PersistenceGranularity: sp.str("persistence_granularity")}
		if n, ok := sp.num("persistence_timeout"); ok {
			x.PersistenceTimeout = &metav1.Duration{Duration: time.Duration(n) * time.Second}
		}
		if sp.err != nil {
			in.fail("session_persistence: %v", sp.err)
		}
		p.Spec.SessionPersistence = x
	}
	return in.err
}

func updatePool(_ *Server, _ context.Context, v *view, o client.Object, obj map[string]any) error {
	return applyPool(newInput(obj, poolUpdatable...), o.(*lbv1.Pool))
}

func (s *Server) removePool(ctx context.Context, v *view, o client.Object, _ bool) error {
	p := o.(*lbv1.Pool)
	if hm := v.monitorOf(p); hm != nil { // as Octavia: the pool's monitor goes with it
		if err := client.IgnoreNotFound(s.Client.Delete(ctx, hm)); err != nil {
			return err
		}
	}
	return client.IgnoreNotFound(s.Client.Delete(ctx, p))
}

// changePool applies change to the pool, again to its newer version on a conflict.
func (s *Server) changePool(ctx context.Context, p *lbv1.Pool, change func(p *lbv1.Pool) error) error {
	return s.retryOnConflict(ctx, p, func() error {
		before := len(p.Spec.Members)
		if err := change(p); err != nil {
			return err
		}
		return s.checkMemberQuota(ctx, p, len(p.Spec.Members)-before)
	})
}

// Health monitors.

var monitorUpdatable = []string{"name", "delay", "timeout", "max_retries", "max_retries_down", "http_method",
	"url_path", "expected_codes", "http_version", "domain_name", "admin_state_up", "tags"}

func (s *Server) createMonitor(ctx context.Context, c *caller, v *view, obj map[string]any) (client.Object, error) {
	in := newInput(obj, append(monitorUpdatable, "pool_id", "type", "project_id", "tenant_id")...)
	pObj := v.find(pools, in.str("pool_id"))
	if pObj == nil && s.othersObject(ctx, c, pools, in.str("pool_id")) {
		return nil, forbidden()
	}
	if pObj == nil {
		in.fail("Invalid input: pool_id %q is not a pool of this project", in.str("pool_id"))
	}
	hm := &lbv1.HealthMonitor{Spec: lbv1.HealthMonitorSpec{Type: lbv1.MonitorType(in.oneOf("type",
		string(lbv1.MonitorTCP), string(lbv1.MonitorHTTP), string(lbv1.MonitorHTTPS), string(lbv1.MonitorTLSHello),
		string(lbv1.MonitorUDPConnect), string(lbv1.MonitorPing)))}}
	for _, k := range []string{"type", "delay", "timeout", "max_retries"} {
		if !in.has(k) {
			in.fail("Invalid input: %s is required", k)
		}
	}
	if err := applyMonitor(in, hm); err != nil {
		return nil, err
	}
	if in.err != nil {
		return nil, in.err
	}
	p := pObj.(*lbv1.Pool)
	if _, err := writableProject(c, map[string]any{"project_id": v.projects[p.Namespace]}); err != nil {
		return nil, err
	}
	if other := v.monitorOf(p); other != nil {
		return nil, conflict("Pool %s already has a health monitor (%s)", p.UID, other.UID)
	}
	hm.Namespace = p.Namespace
	hm.Spec.PoolRef.Name = p.Name
	if err := s.make(ctx, hm, in.str("name"), "monitor"); err != nil {
		return nil, err
	}
	v.hms = append(v.hms, *hm)
	return hm, nil
}

func applyMonitor(in *input, hm *lbv1.HealthMonitor) error {
	setName(hm, in)
	setTags(hm, in)
	seconds := func(k string, dst *metav1.Duration) {
		if n, ok := in.num(k); ok {
			dst.Duration = time.Duration(n) * time.Second
		}
	}
	seconds("delay", &hm.Spec.Delay)
	seconds("timeout", &hm.Spec.Timeout)
	if n, ok := in.num("max_retries"); ok {
		hm.Spec.MaxRetries = n
	}
	if n, ok := in.num("max_retries_down"); ok {
		hm.Spec.MaxRetriesDown = n
	}
	if m := in.oneOf("http_method", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "PATCH", "CONNECT"); m != "" {
		hm.Spec.HTTPMethod = lbv1.HTTPMethod(m)
	}
	if in.has("url_path") {
		hm.Spec.URLPath = in.str("url_path")
	}
	if in.has("expected_codes") {
		hm.Spec.ExpectedCodes = in.str("expected_codes")
	}
	if in.has("http_version") {
		if f, ok := in.obj["http_version"].(float64); ok {
			hm.Spec.HTTPVersion = lbv1.HTTPVersion(fmt.Sprintf("%.1f", f))
		} else {
			hm.Spec.HTTPVersion = lbv1.HTTPVersion(in.str("http_version"))
		}
	}
	if in.has("domain_name") {
		hm.Spec.DomainName = in.str("domain_name")
	}
	in.boolPtr("admin_state_up", &hm.Spec.AdminStateUp)
	return in.err
}

func updateMonitor(_ *Server, _ context.Context, v *view, o client.Object, obj map[string]any) error {
	return applyMonitor(newInput(obj, monitorUpdatable...), o.(*lbv1.HealthMonitor))
}

func (s *Server) removeMonitor(ctx context.Context, v *view, o client.Object, _ bool) error {
	return client.IgnoreNotFound(s.Client.Delete(ctx, o))
}
