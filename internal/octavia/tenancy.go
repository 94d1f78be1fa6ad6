package octavia

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/openstack"
)

// caller is who makes a request, and what Octavia's default policy lets them do.
type caller struct {
	openstack.Identity
	// admin: load-balancer_admin or admin; every project, read and write.
	admin bool
	// globalReader: load-balancer_global_observer; every project, read only.
	globalReader bool
	// writer: load-balancer_member; reader: that or load-balancer_observer. Both in the
	// token's project only. With Keystone's default roles on, member and reader count too.
	writer, reader bool
}

func newCaller(id openstack.Identity, keystoneDefaults bool) *caller {
	has := func(names ...string) bool {
		return slices.ContainsFunc(id.Roles, func(r string) bool { return slices.Contains(names, r) })
	}
	member, observer := []string{"load-balancer_member"}, []string{"load-balancer_observer"}
	if keystoneDefaults {
		member, observer = append(member, "member"), append(observer, "reader")
	}
	c := &caller{Identity: id}
	c.admin = has("admin", "load-balancer_admin")
	c.globalReader = c.admin || has("load-balancer_global_observer")
	c.writer = c.admin || (id.ProjectID != "" && has(member...))
	c.reader = c.writer || c.globalReader || (id.ProjectID != "" && has(observer...))
	return c
}

// authenticated checks the token and the caller's right to make the request (reads for GET,
// writes otherwise) before h runs.
func (s *Server) authenticated(h func(w http.ResponseWriter, r *http.Request, c *caller) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		timeout := s.RequestTimeout
		if timeout == 0 {
			timeout = DefaultRequestTimeout
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		token := r.Header.Get("X-Auth-Token")
		if token == "" {
			s.writeError(w, r, &apiError{http.StatusUnauthorized, "Authentication required"})
			return
		}
		id, err := s.Validate(r.Context(), token)
		if errors.Is(err, openstack.ErrInvalidToken) {
			s.writeError(w, r, &apiError{http.StatusUnauthorized, "Authentication required"})
			return
		}
		if err != nil {
			w.Header().Set("Retry-After", "5")
			s.writeError(w, r, &apiError{http.StatusServiceUnavailable, "Keystone cannot validate the token now: " + err.Error()})
			return
		}
		c := newCaller(id, s.KeystoneDefaultRoles)
		allowed := c.reader
		if r.Method != http.MethodGet {
			allowed = c.writer
		}
		if !allowed {
			s.writeError(w, r, forbidden())
			return
		}
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		if err := h(rec, r, c); err != nil {
			s.writeError(rec, r, err)
		}
		// Writes are the audit trail: who changed what, from which project, with what answer.
		if r.Method != http.MethodGet {
			s.Log.Info("octavia API write", "method", r.Method, "path", r.URL.Path, "code", rec.code,
				"user", c.UserID, "project", c.ProjectID, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// recorder keeps the status code a handler answered.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// projects maps the namespaces the caller may see to their projects.
func (s *Server) projects(ctx context.Context, c *caller) (map[string]string, error) {
	var nss corev1.NamespaceList
	opts := []client.ListOption{client.HasLabels{lbv1.ProjectLabel}}
	if !c.globalReader {
		opts = []client.ListOption{client.MatchingLabels{lbv1.ProjectLabel: c.ProjectID}}
	}
	if err := s.Client.List(ctx, &nss, opts...); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp.IsZero() {
			out[ns.Name] = ns.Labels[lbv1.ProjectLabel]
		}
	}
	return out, nil
}

// namespaceFor is where objects of project go: the namespace labelled with it, made on first
// use when the server may.
func (s *Server) namespaceFor(ctx context.Context, project string) (string, error) {
	if project == "" {
		return "", badRequest("the token is not scoped to a project")
	}
	var nss corev1.NamespaceList
	if err := s.Client.List(ctx, &nss, client.MatchingLabels{lbv1.ProjectLabel: project}); err != nil {
		return "", err
	}
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp.IsZero() {
			return ns.Name, nil
		}
	}
	if !s.CreateNamespaces {
		return "", &apiError{http.StatusForbidden, "project " + project + " has no namespace for its load balancers: an administrator labels one " + lbv1.ProjectLabel + "=" + project}
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openstack-" + project, Labels: map[string]string{lbv1.ProjectLabel: project}}}
	if err := s.Client.Create(ctx, ns); err != nil {
		return "", err
	}
	return ns.Name, nil
}

// writableProject is the project a write goes to: the caller's, or for an administrator the
// project_id it names.
func writableProject(c *caller, obj map[string]any) (string, error) {
	p, _ := obj["project_id"].(string)
	if p == "" {
		p, _ = obj["tenant_id"].(string)
	}
	switch {
	case p == "" || p == c.ProjectID:
		return c.ProjectID, nil
	case c.admin:
		return p, nil
	}
	return "", forbidden()
}
