package octavia

import (
	"context"
	"net/http"
	"slices"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Octavia's amphorae are the VMs that carry a load balancer, MASTER and BACKUP in its
// active-standby topology. l4lb's are the nodes: the one holding the VIP is the MASTER, every
// other node with a running dataplane agent stands by as a BACKUP. Read-only, and for
// administrators only, as Octavia's policy has it.

// Agents lists the nodes with a running dataplane agent and their addresses.
type Agents func(ctx context.Context) (map[string]string, error)

// Nodes implements Agents with the agents' pods.
func (a *AgentMetrics) Nodes(ctx context.Context) (map[string]string, error) {
	var pods corev1.PodList
	if err := a.Client.List(ctx, &pods, client.InNamespace(a.Namespace), client.MatchingLabels(a.Selector)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
			out[p.Spec.NodeName] = p.Status.PodIP // host network: the node's address
		}
	}
	return out, nil
}

// amphorae are the visible load balancers' amphorae, in Octavia's shape.
func (s *Server) amphorae(ctx context.Context, c *caller) ([]map[string]any, error) {
	if !c.admin {
		return nil, forbidden()
	}
	v, err := s.load(ctx, c)
	if err != nil {
		return nil, err
	}
	nodes := map[string]string{}
	if s.Agents != nil {
		if nodes, err = s.Agents(ctx); err != nil {
			return nil, err
		}
	}
	var out []map[string]any
	for i := range v.lbs {
		lb := &v.lbs[i]
		names := []string{}
		for n := range nodes {
			if n != lb.Status.Holder {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		if lb.Status.Holder != "" {
			names = append([]string{lb.Status.Holder}, names...)
		}
		for _, n := range names {
			out = append(out, amphoraJSON(lb, n, nodes[n]))
		}
	}
	return out, nil
}

func amphoraJSON(lb *lbv1.LoadBalancer, node, addr string) map[string]any {
	role, status := "BACKUP", "READY"
	if node == lb.Status.Holder {
		role, status = "MASTER", "ALLOCATED"
	}
	ns, err := uuid.Parse(string(lb.UID))
	if err != nil {
		ns = uuid.NameSpaceOID
	}
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	created := lb.CreationTimestamp.UTC().Format(timeFormat)
	return map[string]any{
		"id": uuid.NewSHA1(ns, []byte("node/"+node)).String(), "loadbalancer_id": string(lb.UID),
		"compute_id": node, "lb_network_ip": orNull(addr), "vrrp_ip": orNull(addr),
		"ha_ip": orNull(lb.Status.VIPAddress), "ha_port_id": orNull(lb.Status.VIPPortID), "vrrp_port_id": nil,
		"role": role, "status": status, "vrrp_interface": nil, "vrrp_id": nil, "vrrp_priority": nil,
		"cert_expiration": nil, "cert_busy": false, "cached_zone": nil, "image_id": nil, "compute_flavor": nil,
		"created_at": created, "updated_at": created,
	}
}

func (s *Server) listAmphorae(w http.ResponseWriter, r *http.Request, c *caller) error {
	items, err := s.amphorae(r.Context(), c)
	if err != nil {
		return err
	}
	out, err := page(r, "amphorae", items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getAmphora(w http.ResponseWriter, r *http.Request, c *caller) error {
	items, err := s.amphorae(r.Context(), c)
	if err != nil {
		return err
	}
	for _, a := range items {
		if a["id"] == r.PathValue("id") {
			writeJSON(w, http.StatusOK, map[string]any{"amphora": a})
			return nil
		}
	}
	return notFound("Amphora", r.PathValue("id"))
}
