package octavia

import (
	"context"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/load"
	"github.com/l4lb/l4lb/internal/model"
)

// view is the objects a caller may see, read once per request.
type view struct {
	projects map[string]string // namespace -> project
	lbs      []lbv1.LoadBalancer
	ls       []lbv1.Listener
	ps       []lbv1.Pool
	hms      []lbv1.HealthMonitor
}

func (s *Server) load(ctx context.Context, c *caller) (*view, error) {
	v := &view{}
	var err error
	if v.projects, err = s.projects(ctx, c); err != nil {
		return nil, err
	}
	var namespaces []string // a global reader lists every namespace at once
	if !c.globalReader {
		namespaces = slices.Sorted(maps.Keys(v.projects))
		if len(namespaces) == 0 {
			return v, nil
		}
	}
	objs, err := load.Objects(ctx, s.Client, namespaces...)
	if err != nil {
		return nil, err
	}
	v.lbs, v.ls = visible(objs.LoadBalancers, v.projects), visible(objs.Listeners, v.projects)
	v.ps, v.hms = visible(objs.Pools, v.projects), visible(objs.Monitors, v.projects)
	return v, nil
}

// visible keeps the objects of the namespaces in projects.
func visible[T any, P interface {
	*T
	client.Object
}](items []T, projects map[string]string) []T {
	var out []T
	for i := range items {
		if _, ok := projects[P(&items[i]).GetNamespace()]; ok {
			out = append(out, items[i])
		}
	}
	return out
}

func named[T any, P interface {
	*T
	client.Object
}](items []T, ns, name string) P {
	for i := range items {
		if o := P(&items[i]); o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (v *view) lbNamed(ns, name string) *lbv1.LoadBalancer   { return named(v.lbs, ns, name) }
func (v *view) listenerNamed(ns, name string) *lbv1.Listener { return named(v.ls, ns, name) }
func (v *view) poolNamed(ns, name string) *lbv1.Pool         { return named(v.ps, ns, name) }

// listenersOf, poolOf, monitorOf: what refers to an object, by its name in its namespace.
func (v *view) listenersOf(lb *lbv1.LoadBalancer) []*lbv1.Listener {
	var out []*lbv1.Listener
	for i := range v.ls {
		if v.ls[i].Namespace == lb.Namespace && v.ls[i].Spec.LoadBalancerRef.Name == lb.Name {
			out = append(out, &v.ls[i])
		}
	}
	return out
}

func (v *view) poolOf(l *lbv1.Listener) *lbv1.Pool {
	for i := range v.ps {
		if v.ps[i].Namespace == l.Namespace && v.ps[i].Spec.ListenerName() == l.Name {
			return &v.ps[i]
		}
	}
	return nil
}

func (v *view) monitorOf(p *lbv1.Pool) *lbv1.HealthMonitor {
	for i := range v.hms {
		if v.hms[i].Namespace == p.Namespace && v.hms[i].Spec.PoolRef.Name == p.Name {
			return &v.hms[i]
		}
	}
	return nil
}

// poolsOf are the pools of a load balancer whose listeners are ls (listenersOf), serving a
// listener or not: model.PoolLoadBalancer's rule, a pool's own reference or its listener's,
// checked against this load balancer's listeners only (against them all, pool by pool, a list
// of 1,000 load balancers took seconds).
func (v *view) poolsOf(lb *lbv1.LoadBalancer, ls []*lbv1.Listener) []*lbv1.Pool {
	mine := map[string]bool{}
	for _, l := range ls {
		mine[l.Name] = true
	}
	var out []*lbv1.Pool
	for i := range v.ps {
		p := &v.ps[i]
		if p.Namespace != lb.Namespace {
			continue
		}
		if ref := p.Spec.LoadBalancerRef; ref != nil && ref.Name == lb.Name || ref == nil && mine[p.Spec.ListenerName()] {
			out = append(out, p)
		}
	}
	return out
}

// childPending reports whether a listener, pool or monitor of a load balancer is not yet
// what was last asked of it (PENDING_*).
func (v *view) childPending(ls []*lbv1.Listener, ps []*lbv1.Pool) bool {
	pending := func(o client.Object, st lbv1.CommonStatus) bool {
		return strings.HasPrefix(provisioning(o, st), "PENDING_")
	}
	for _, l := range ls {
		if pending(l, l.Status.CommonStatus) {
			return true
		}
	}
	for _, p := range ps {
		if pending(p, p.Status.CommonStatus) {
			return true
		}
		if hm := v.monitorOf(p); hm != nil && pending(hm, hm.Status.CommonStatus) {
			return true
		}
	}
	return false
}

// lbOfPool is the load balancer a pool belongs to.
func (v *view) lbOfPool(p *lbv1.Pool) *lbv1.LoadBalancer {
	return v.lbNamed(p.Namespace, model.PoolLoadBalancer(p, v.ls))
}

// provisioning is o's provisioning_status: its status's, PENDING_CREATE before the first
// status, PENDING_UPDATE until the status has seen the last change, PENDING_DELETE once
// deletion started.
func provisioning(o client.Object, st lbv1.CommonStatus) string {
	prov := string(st.ProvisioningStatus)
	switch {
	case !o.GetDeletionTimestamp().IsZero():
		prov = string(lbv1.ProvisioningPendingDelete)
	case prov == "":
		prov = string(lbv1.ProvisioningPendingCreate)
	case st.ObservedGeneration < o.GetGeneration() && prov == string(lbv1.ProvisioningActive):
		prov = string(lbv1.ProvisioningPendingUpdate)
	}
	return prov
}

// common is what every Octavia object carries.
func (v *view) common(o client.Object, st lbv1.CommonStatus, description string, adminUp *bool) map[string]any {
	prov := provisioning(o, st)
	op := string(st.OperatingStatus)
	if op == "" {
		op = string(lbv1.OperatingOffline)
	}
	name, made := o.GetAnnotations()[NameAnnotation]
	if !made {
		name = o.GetName() // made with kubectl: its name is what its users call it
	}
	project := v.projects[o.GetNamespace()]
	return map[string]any{
		"id": string(o.GetUID()), "name": name, "description": description,
		"provisioning_status": prov, "operating_status": op, "admin_state_up": adminUp == nil || *adminUp,
		"project_id": project, "tenant_id": project,
		"created_at": o.GetCreationTimestamp().UTC().Format(timeFormat), "updated_at": updatedAt(o), "tags": tagsOf(o),
	}
}

// updatedAt is the last time anyone changed o, its spec or its status (the newest of its
// managed fields' times), or nil until something did after its creation, as Octavia's.
//
// Times have a second's precision: a status written in the creation's second is a change too
// (Octavia's objects going ACTIVE set updated_at; its test suite reads it then).
func updatedAt(o client.Object) any {
	created := o.GetCreationTimestamp().Time
	last, changed := created, false
	for _, f := range o.GetManagedFields() {
		if f.Time == nil {
			continue
		}
		if f.Subresource == "status" || f.Operation == metav1.ManagedFieldsOperationUpdate && f.Time.After(created) {
			changed = true
		}
		if f.Time.After(last) {
			last = f.Time.Time
		}
	}
	if !changed && !last.After(created) {
		return nil
	}
	return last.UTC().Format(timeFormat)
}

func ids[T client.Object](objs []T) []any {
	out := []any{}
	for _, o := range objs {
		out = append(out, map[string]any{"id": string(o.GetUID())})
	}
	return out
}

func idOrNil(o client.Object, ok bool) any {
	if !ok {
		return nil
	}
	return string(o.GetUID())
}

// find returns the object of kind k with UID id among those the caller sees.
func (v *view) find(k kind, id string) client.Object {
	for _, o := range k.objects(v) {
		if o.GetUID() == types.UID(id) {
			return o
		}
	}
	return nil
}

// k8sName derives a Kubernetes name from an Octavia name (free text: "80_listener"):
// lowercase letters, digits and dashes, at most 48 characters; fallback when nothing is left.
func k8sName(name, fallback string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 48 {
			break
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		return fallback
	}
	return out
}

// timeFormat is Octavia's: RFC 3339 without a zone, in UTC (gophercloud parses it so).
const timeFormat = "2006-01-02T15:04:05"
