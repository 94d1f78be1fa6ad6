package octavia

import (
	"context"
	"net/http"
	"strconv"

	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/load"
)

// The writes of each kind (writes.go), set here so the kinds and the Server's methods do not
// refer to each other at package initialisation.
type writes struct {
	create func(s *Server, ctx context.Context, c *caller, v *view, obj map[string]any) (client.Object, error)
	update func(s *Server, ctx context.Context, v *view, o client.Object, obj map[string]any) error
	remove func(s *Server, ctx context.Context, v *view, o client.Object, cascade bool) error
}

var writesOf = map[string]writes{}

func (s *Server) list(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		v, err := s.load(r.Context(), c)
		if err != nil {
			return err
		}
		var items []map[string]any
		for _, o := range k.objects(v) {
			items = append(items, k.json(v, o))
		}
		out, err := page(r, k.plural, items)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) get(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		v, o, err := s.found(r, c, k)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{k.singular: k.json(v, o)})
		return nil
	}
}

func (s *Server) create(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		obj, err := body(r, k.singular)
		if err != nil {
			return err
		}
		v, err := s.load(r.Context(), c)
		if err != nil {
			return err
		}
		o, err := writesOf[k.plural].create(s, r.Context(), c, v, obj)
		if err != nil {
			return err
		}
		return s.answer(w, r, c, k, o, http.StatusCreated)
	}
}

func (s *Server) update(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		obj, err := body(r, k.singular)
		if err != nil {
			return err
		}
		v, o, err := s.found(r, c, k)
		if err != nil {
			return err
		}
		// The controller writes the same objects (finalizers, annotations, status), so a
		// client's update can meet a newer version than the one read: Octavia has no such
		// conflict to report, the change is applied again to the newer version.
		err = s.retryOnConflict(r.Context(), o, func() error {
			return writesOf[k.plural].update(s, r.Context(), v, o, obj)
		})
		if err != nil {
			return err
		}
		return s.answer(w, r, c, k, o, http.StatusOK)
	}
}

func (s *Server) delete(k kind) func(http.ResponseWriter, *http.Request, *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		v, o, err := s.found(r, c, k)
		if err != nil {
			return err
		}
		if err := writesOf[k.plural].remove(s, r.Context(), v, o, truthy(r.URL.Query().Get("cascade"))); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// failover is Octavia's load balancer failover, an administrator's call: the VIP moves off
// the node holding it (lbv1.FailoverAnnotation), the next node taking it after the holder let
// go. With no holder yet, nothing moves.
func (s *Server) failover(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, o, err := s.found(r, c, loadBalancers)
	if err != nil {
		return err
	}
	if !c.admin {
		return forbidden()
	}
	lb := o.(*lbv1.LoadBalancer)
	if lb.Status.Holder != "" {
		err := s.retryOnConflict(r.Context(), lb, func() error {
			annotate(lb, lbv1.FailoverAnnotation, lb.Status.Holder)
			return nil
		})
		if err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// found reads the caller's view and the object of kind k the path names in it ({id}, or
// the wildcard given).
func (s *Server) found(r *http.Request, c *caller, k kind, wildcard ...string) (*view, client.Object, error) {
	v, err := s.load(r.Context(), c)
	if err != nil {
		return nil, nil, err
	}
	id := r.PathValue(append(wildcard, "id")[0])
	o := v.find(k, id)
	if o == nil {
		if s.othersObject(r.Context(), c, k, id) {
			return nil, nil, forbidden() // Octavia's policy: another project's object is 403, not 404
		}
		return nil, nil, notFound(k.what, id)
	}
	return v, o, nil
}

// othersObject reports whether an object of kind k with UID id exists where the caller does
// not see it (another project's): Octavia's policy answers that 403, not 404. Only a call that
// would otherwise answer 404 or 400 asks.
func (s *Server) othersObject(ctx context.Context, c *caller, k kind, id string) bool {
	if id == "" || c.globalReader {
		return false
	}
	objs, err := load.Objects(ctx, s.Client)
	if err != nil {
		return false
	}
	all := &view{lbs: objs.LoadBalancers, ls: objs.Listeners, ps: objs.Pools, hms: objs.Monitors}
	return all.find(k, id) != nil
}

// answer writes o as it is now, read back with what refers to it.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, c *caller, k kind, o client.Object, code int) error {
	v, err := s.load(r.Context(), c)
	if err != nil {
		return err
	}
	cur := v.find(k, string(o.GetUID()))
	if cur == nil {
		cur = o
	}
	// As Octavia answers: a create is PENDING_CREATE and an update PENDING_UPDATE in its own
	// answer, however fast the controller and the dataplane were (a client waits for ACTIVE
	// from there, and one reading ACTIVE at once would not know which version it is).
	out := k.json(v, cur)
	switch {
	case code == http.StatusCreated:
		out["provisioning_status"] = string(lbv1.ProvisioningPendingCreate)
	case code == http.StatusOK && out["provisioning_status"] == string(lbv1.ProvisioningActive):
		out["provisioning_status"] = string(lbv1.ProvisioningPendingUpdate)
	}
	writeJSON(w, code, map[string]any{k.singular: out})
	return nil
}

// statusTree is GET /loadbalancers/{id}/status: the load balancer and everything under it,
// with their statuses.
func (s *Server) statusTree(w http.ResponseWriter, r *http.Request, c *caller) error {
	v, o, err := s.found(r, c, loadBalancers)
	if err != nil {
		return err
	}
	lb := o.(*lbv1.LoadBalancer)
	short := func(m map[string]any, keys ...string) map[string]any {
		out := map[string]any{}
		for _, k := range append(keys, "id", "name", "provisioning_status", "operating_status") {
			out[k] = m[k]
		}
		return out
	}
	var ls []any
	for _, l := range v.listenersOf(lb) {
		lm := short(listenerJSON(v, l))
		var ps []any
		if p := v.poolOf(l); p != nil {
			pm := short(poolJSON(v, p))
			if hm := v.monitorOf(p); hm != nil {
				pm["health_monitor"] = short(monitorJSON(v, hm), "type")
			}
			var ms []any
			for _, mm := range p.Spec.Members {
				ms = append(ms, short(memberJSON(v, p, mm), "address", "protocol_port"))
			}
			pm["members"] = orEmpty(ms)
			ps = append(ps, pm)
		}
		lm["pools"] = orEmpty(ps)
		ls = append(ls, lm)
	}
	lbm := short(lbJSON(v, lb))
	lbm["listeners"] = orEmpty(ls)
	writeJSON(w, http.StatusOK, map[string]any{"statuses": map[string]any{"loadbalancer": lbm}})
	return nil
}

// truthy reads a boolean query parameter as Python clients write it too ("True").
func truthy(s string) bool { b, _ := strconv.ParseBool(s); return b }

func orEmpty(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}

// retryOnConflict applies change to o and updates it; on a conflict it reads o again and
// starts over.
func (s *Server) retryOnConflict(ctx context.Context, o client.Object, change func() error) error {
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := s.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
				return err
			}
		}
		first = false
		if err := change(); err != nil {
			return err
		}
		return s.Client.Update(ctx, o)
	})
}
