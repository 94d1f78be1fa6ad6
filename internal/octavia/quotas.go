package octavia

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// Octavia's quotas are a project namespace's ResourceQuota named quotaName, counting the l4lb
// objects (count/loadbalancers.lb.l4lb.io and so on), which the API server enforces on every
// create, through this API or kubectl alike. -1 is Octavia's "unlimited": no count in the
// quota. Members live inside their pool, so no ResourceQuota counts them: their quota is an
// annotation of the same ResourceQuota, enforced by this API on every change that adds
// members (as Octavia enforces its quotas in its API); kubectl users are not Octavia's.

const (
	quotaName = "octavia"
	// MemberQuotaAnnotation on a project's ResourceQuota is its member quota.
	MemberQuotaAnnotation = "lb.l4lb.io/octavia-member-quota"
)

// quotaResources maps Octavia's quota fields to the counts a ResourceQuota keeps.
var quotaResources = map[string]corev1.ResourceName{
	"load_balancer":  "count/loadbalancers.lb.l4lb.io",
	"listener":       "count/listeners.lb.l4lb.io",
	"pool":           "count/pools.lb.l4lb.io",
	"health_monitor": "count/healthmonitors.lb.l4lb.io",
}

// quotaJSON is a project's quotas as Octavia shows them.
func quotaJSON(project string, rq *corev1.ResourceQuota) map[string]any {
	q := map[string]any{"project_id": project, "member": memberQuota(rq), "l7policy": -1, "l7rule": -1}
	for field, res := range quotaResources {
		q[field] = -1
		if rq != nil {
			if v, ok := rq.Spec.Hard[res]; ok {
				q[field] = v.Value()
			}
		}
	}
	// Octavia's older spellings, which clients (gophercloud) still read.
	q["loadbalancer"] = q["load_balancer"]
	q["healthmonitor"] = q["health_monitor"]
	return q
}

// memberQuota is the member quota a ResourceQuota carries (-1: none).
func memberQuota(rq *corev1.ResourceQuota) int {
	if rq == nil {
		return -1
	}
	n, err := strconv.Atoi(rq.Annotations[MemberQuotaAnnotation])
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// checkMemberQuota refuses a change that leaves the namespace's pools with more members than
// its member quota, as Octavia answers: 403, Quota has been met. p is the pool as it will be.
func (s *Server) checkMemberQuota(ctx context.Context, p *lbv1.Pool, added int) error {
	if added <= 0 {
		return nil
	}
	var rq corev1.ResourceQuota
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: quotaName}, &rq)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	limit := memberQuota(&rq)
	if limit < 0 {
		return nil
	}
	var ps lbv1.PoolList
	if err := s.Client.List(ctx, &ps, client.InNamespace(p.Namespace)); err != nil {
		return err
	}
	n := len(p.Spec.Members)
	for _, other := range ps.Items {
		if other.Name != p.Name || p.Name == "" {
			n += len(other.Spec.Members)
		}
	}
	if n > limit {
		return &apiError{http.StatusForbidden, fmt.Sprintf("Quota has been met: the project's member quota is %d", limit)}
	}
	return nil
}

// quotaOf reads a project's ResourceQuota (nil when it has none, or no namespace yet).
func (s *Server) quotaOf(r *http.Request, project string) (*corev1.ResourceQuota, string, error) {
	var nss corev1.NamespaceList
	if err := s.Client.List(r.Context(), &nss, client.MatchingLabels{lbv1.ProjectLabel: project}); err != nil {
		return nil, "", err
	}
	if len(nss.Items) == 0 {
		return nil, "", nil
	}
	ns := nss.Items[0].Name
	var rq corev1.ResourceQuota
	err := s.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: quotaName}, &rq)
	if apierrors.IsNotFound(err) {
		return nil, ns, nil
	}
	return &rq, ns, err
}

// mayReadQuota: a project's own readers, and the global readers.
func mayReadQuota(c *caller, project string) bool {
	return c.globalReader || (c.reader && project == c.ProjectID)
}

func (s *Server) listQuotas(w http.ResponseWriter, r *http.Request, c *caller) error {
	projects, err := s.projects(r.Context(), c)
	if err != nil {
		return err
	}
	items := []map[string]any{}
	for _, project := range projects {
		rq, _, err := s.quotaOf(r, project)
		if err != nil {
			return err
		}
		items = append(items, quotaJSON(project, rq))
	}
	out, err := page(r, "quotas", items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getQuota(w http.ResponseWriter, r *http.Request, c *caller) error {
	project := r.PathValue("project")
	if !mayReadQuota(c, project) {
		return forbidden()
	}
	rq, _, err := s.quotaOf(r, project)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota": quotaJSON(project, rq)})
	return nil
}

// defaultQuota is what a project without a quota gets: unlimited, as Octavia's defaults.
func (s *Server) defaultQuota(w http.ResponseWriter, r *http.Request, c *caller) error {
	writeJSON(w, http.StatusOK, map[string]any{"quota": quotaJSON(r.PathValue("project"), nil)})
	return nil
}

// updateQuota sets a project's quotas (administrators only, as Octavia's policy): the counts
// given go into its ResourceQuota, -1 removes one.
func (s *Server) updateQuota(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.admin {
		return forbidden()
	}
	project := r.PathValue("project")
	obj, err := body(r, "quota")
	if err != nil {
		return err
	}
	allowed := []string{"member", "l7policy", "l7rule", "loadbalancer", "healthmonitor"}
	for field := range quotaResources {
		allowed = append(allowed, field)
	}
	in := newInput(obj, allowed...)
	for _, old := range [][2]string{{"loadbalancer", "load_balancer"}, {"healthmonitor", "health_monitor"}} {
		if in.has(old[0]) && !in.has(old[1]) {
			obj[old[1]] = obj[old[0]]
		}
	}
	for _, f := range []string{"l7policy", "l7rule"} {
		if n, ok := in.num(f); ok && n != -1 {
			in.fail("Invalid input: l4lb cannot count %s objects; %s takes -1 (unlimited) only", f, f)
		}
	}
	ns, err := s.namespaceFor(r.Context(), project)
	if err != nil {
		return err
	}
	rq := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: quotaName}}
	err = client.IgnoreNotFound(s.Client.Get(r.Context(), client.ObjectKeyFromObject(rq), rq))
	if err != nil {
		return err
	}
	if rq.Spec.Hard == nil {
		rq.Spec.Hard = corev1.ResourceList{}
	}
	for field, res := range quotaResources {
		n, ok := in.num(field)
		switch {
		case !ok:
		case n < -1:
			in.fail("Invalid input: %s must be -1 (unlimited) or more", field)
		case n == -1:
			delete(rq.Spec.Hard, res)
		default:
			rq.Spec.Hard[res] = *resource.NewQuantity(int64(n), resource.DecimalSI)
		}
	}
	if n, ok := in.num("member"); ok {
		switch {
		case n < -1:
			in.fail("Invalid input: member must be -1 (unlimited) or more")
		case n == -1:
			delete(rq.Annotations, MemberQuotaAnnotation)
		default:
			metav1.SetMetaDataAnnotation(&rq.ObjectMeta, MemberQuotaAnnotation, strconv.Itoa(int(n)))
		}
	}
	if in.err != nil {
		return in.err
	}
	if rq.ResourceVersion == "" {
		err = s.Client.Create(r.Context(), rq)
	} else {
		err = s.Client.Update(r.Context(), rq)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"quota": quotaJSON(project, rq)})
	return nil
}

// deleteQuota resets a project's quotas to the defaults (unlimited).
func (s *Server) deleteQuota(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.admin {
		return forbidden()
	}
	rq, _, err := s.quotaOf(r, r.PathValue("project"))
	if err != nil {
		return err
	}
	if rq != nil {
		if err := client.IgnoreNotFound(s.Client.Delete(r.Context(), rq)); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
