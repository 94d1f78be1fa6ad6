package octavia

import (
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// kind is one of Octavia's top-level resources and the l4lb kind behind it.
type kind struct {
	plural, singular, what string
	objects                func(v *view) []client.Object
	json                   func(v *view, o client.Object) map[string]any
}

func objectsOf[T any, P interface {
	*T
	client.Object
}](items []T) []client.Object {
	out := make([]client.Object, len(items))
	for i := range items {
		out[i] = P(&items[i])
	}
	return out
}

var (
	loadBalancers = kind{plural: "loadbalancers", singular: "loadbalancer", what: "Load Balancer",
		objects: func(v *view) []client.Object { return objectsOf(v.lbs) }, json: lbJSON}
	listeners = kind{plural: "listeners", singular: "listener", what: "Listener",
		objects: func(v *view) []client.Object { return objectsOf(v.ls) }, json: listenerJSON}
	pools = kind{plural: "pools", singular: "pool", what: "Pool",
		objects: func(v *view) []client.Object { return objectsOf(v.ps) }, json: poolJSON}
	healthMonitors = kind{plural: "healthmonitors", singular: "healthmonitor", what: "Health Monitor",
		objects: func(v *view) []client.Object { return objectsOf(v.hms) }, json: monitorJSON}
)

func lbJSON(v *view, o client.Object) map[string]any {
	lb := o.(*lbv1.LoadBalancer)
	m := v.common(lb, lb.Status.CommonStatus, lb.Spec.Description, lb.Spec.AdminStateUp)
	var subnet, network, port any
	if vip := lb.Spec.VIP; vip != nil {
		if vip.Subnet != "" {
			subnet = vip.Subnet
		}
		if vip.Network != "" {
			network = vip.Network
		}
		if vip.Port != "" {
			port = vip.Port
		}
	}
	if lb.Status.VIPNetworkID != "" {
		network = lb.Status.VIPNetworkID
	}
	if lb.Status.VIPSubnetID != "" {
		subnet = lb.Status.VIPSubnetID
	}
	if lb.Status.VIPPortID != "" {
		port = lb.Status.VIPPortID
	}
	var address any
	if lb.Status.VIPAddress != "" {
		address = lb.Status.VIPAddress
	}
	ls := v.listenersOf(lb)
	ps := v.poolsOf(lb, ls) // served by a listener or not, as Octavia lists them
	if m["provisioning_status"] == string(lbv1.ProvisioningActive) && v.childPending(ls, ps) {
		// Octavia locks a load balancer (PENDING_UPDATE) while a change below it is being
		// made, and clients wait on the load balancer alone (`--wait`, OCCM, Terraform).
		m["provisioning_status"] = string(lbv1.ProvisioningPendingUpdate)
	}
	m["vip_address"] = address
	m["vip_port_id"] = port
	m["vip_subnet_id"] = subnet
	m["vip_network_id"] = network
	m["provider"] = Provider
	if p := lb.GetAnnotations()[ProviderAnnotation]; p != "" {
		m["provider"] = p
	}
	unimplemented(m, "vip_qos_policy_id", "flavor_id", "availability_zone")
	m["additional_vips"] = []any{} // Octavia's since API 2.26; l4lb has one VIP per load balancer
	m["listeners"] = ids(ls)
	m["pools"] = ids(ps)
	return m
}

// unimplemented shows Octavia's fields that l4lb does not implement as null, as Octavia shows
// them unset (clients read them; writes of them are refused, input.go).
func unimplemented(m map[string]any, keys ...string) {
	for _, k := range keys {
		m[k] = nil
	}
}

func millis(d *time.Duration, def int) int {
	if d == nil {
		return def
	}
	return int(*d / time.Millisecond)
}

func dur(d *metav1.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	x := d.Duration
	return &x
}

func listenerJSON(v *view, o client.Object) map[string]any {
	l := o.(*lbv1.Listener)
	m := v.common(l, l.Status.CommonStatus, l.Spec.Description, l.Spec.AdminStateUp)
	m["protocol"] = string(l.Spec.Protocol)
	m["protocol_port"] = l.Spec.ProtocolPort
	limit := int32(-1)
	if l.Spec.ConnectionLimit != nil {
		limit = *l.Spec.ConnectionLimit
	}
	m["connection_limit"] = limit
	p := v.poolOf(l)
	m["default_pool_id"] = idOrNil(p, p != nil)
	var lbs []*lbv1.LoadBalancer
	if lb := v.lbNamed(l.Namespace, l.Spec.LoadBalancerRef.Name); lb != nil {
		lbs = append(lbs, lb)
	}
	m["loadbalancers"] = ids(lbs)
	for key, d := range map[string]struct {
		v   *time.Duration
		def int
	}{
		"timeout_client_data":    {dur(l.Spec.TimeoutClientData), 50000},
		"timeout_member_connect": {dur(l.Spec.TimeoutMemberConnect), 5000},
		"timeout_member_data":    {dur(l.Spec.TimeoutMemberData), 50000},
		"timeout_tcp_inspect":    {dur(l.Spec.TimeoutTCPInspect), 0},
	} {
		m[key] = millis(d.v, d.def)
	}
	var cidrs any
	if len(l.Spec.AllowedCIDRs) > 0 {
		cidrs = l.Spec.AllowedCIDRs
	}
	m["allowed_cidrs"] = cidrs
	m["insert_headers"] = map[string]any{}
	m["l7policies"] = []any{}
	m["sni_container_refs"] = []any{}
	m["client_authentication"] = "NONE"
	unimplemented(m, "default_tls_container_ref", "client_ca_tls_container_ref", "client_crl_container_ref",
		"tls_ciphers", "tls_versions", "alpn_protocols")
	return m
}

func poolJSON(v *view, o client.Object) map[string]any {
	p := o.(*lbv1.Pool)
	m := v.common(p, p.Status.CommonStatus, p.Spec.Description, p.Spec.AdminStateUp)
	m["protocol"] = string(p.Spec.Protocol)
	m["lb_algorithm"] = string(p.Spec.LBAlgorithm)
	var sp any
	if s := p.Spec.SessionPersistence; s != nil {
		x := map[string]any{"type": string(s.Type), "cookie_name": nil, "persistence_timeout": nil, "persistence_granularity": nil}
		if s.PersistenceTimeout != nil {
			x["persistence_timeout"] = int(s.PersistenceTimeout.Duration / time.Second)
		}
		if s.PersistenceGranularity != "" {
			x["persistence_granularity"] = s.PersistenceGranularity
		}
		sp = x
	}
	m["session_persistence"] = sp
	var ls []*lbv1.Listener
	if l := v.listenerNamed(p.Namespace, p.Spec.ListenerName()); l != nil {
		ls = append(ls, l)
	}
	m["listeners"] = ids(ls)
	var lbs []*lbv1.LoadBalancer
	if lb := v.lbOfPool(p); lb != nil {
		lbs = append(lbs, lb)
	}
	m["loadbalancers"] = ids(lbs)
	members := []any{}
	meta := membersMeta(p)
	for _, mm := range p.Spec.Members {
		members = append(members, map[string]any{"id": memberIDOf(p, meta, mm.Name)})
	}
	m["members"] = members
	if hm := v.monitorOf(p); hm != nil {
		m["healthmonitor_id"] = string(hm.GetUID()) // absent, not null, without one: as Octavia's
	}
	m["tls_enabled"] = false
	unimplemented(m, "tls_container_ref", "ca_tls_container_ref", "crl_container_ref", "tls_ciphers", "tls_versions", "alpn_protocols")
	return m
}

func memberJSON(v *view, p *lbv1.Pool, mm lbv1.Member) map[string]any {
	op := string(lbv1.OperatingOffline)
	for _, st := range p.Status.Members {
		if st.Name == mm.Name && st.OperatingStatus != "" {
			op = string(st.OperatingStatus)
		}
	}
	prov := provisioning(p, p.Status.CommonStatus)
	weight := int32(1)
	if mm.Weight != nil {
		weight = *mm.Weight
	}
	var monAddr, monPort any
	if mm.MonitorAddress != "" {
		monAddr = mm.MonitorAddress
	}
	if mm.MonitorPort != nil {
		monPort = *mm.MonitorPort
	}
	project := v.projects[p.Namespace]
	name := mm.Name
	if name == unnamedMember(mm.Address, mm.ProtocolPort) {
		name = ""
	}
	meta := membersMeta(p)
	tags := meta[mm.Name].Tags
	if tags == nil {
		tags = []string{}
	}
	var subnet any
	if mm.SubnetID != "" {
		subnet = mm.SubnetID
	}
	return map[string]any{
		"id": memberIDOf(p, meta, mm.Name), "name": name, "address": mm.Address, "protocol_port": mm.ProtocolPort,
		"weight": weight, "backup": mm.Backup, "admin_state_up": mm.AdminStateUp == nil || *mm.AdminStateUp,
		"subnet_id": subnet, "monitor_address": monAddr, "monitor_port": monPort,
		"provisioning_status": prov, "operating_status": op, "project_id": project, "tenant_id": project,
		"created_at": p.CreationTimestamp.UTC().Format(timeFormat), "updated_at": updatedAt(p), "tags": tags,
	}
}

func monitorJSON(v *view, o client.Object) map[string]any {
	hm := o.(*lbv1.HealthMonitor)
	m := v.common(hm, hm.Status.CommonStatus, "", hm.Spec.AdminStateUp)
	delete(m, "description")
	m["type"] = string(hm.Spec.Type)
	m["delay"] = int(hm.Spec.Delay.Duration / time.Second)
	m["timeout"] = int(hm.Spec.Timeout.Duration / time.Second)
	m["max_retries"] = hm.Spec.MaxRetries
	down := hm.Spec.MaxRetriesDown
	if down == 0 {
		down = 3
	}
	m["max_retries_down"] = down
	var method, path, codes, version, domain any
	if hm.Spec.Type == lbv1.MonitorHTTP || hm.Spec.Type == lbv1.MonitorHTTPS {
		method, path, codes = "GET", "/", "200"
		if hm.Spec.HTTPMethod != "" {
			method = string(hm.Spec.HTTPMethod)
		}
		if hm.Spec.URLPath != "" {
			path = hm.Spec.URLPath
		}
		if hm.Spec.ExpectedCodes != "" {
			codes = hm.Spec.ExpectedCodes
		}
		if f, err := strconv.ParseFloat(string(hm.Spec.HTTPVersion), 64); err == nil {
			version = f // a number in Octavia's API: 1.0 or 1.1
		}
		if hm.Spec.DomainName != "" {
			domain = hm.Spec.DomainName
		}
	}
	m["http_method"], m["url_path"], m["expected_codes"], m["http_version"], m["domain_name"] = method, path, codes, version, domain
	var ps []*lbv1.Pool
	if p := v.poolNamed(hm.Namespace, hm.Spec.PoolRef.Name); p != nil {
		ps = append(ps, p)
	}
	m["pools"] = ids(ps)
	return m
}
