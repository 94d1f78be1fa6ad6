// Package octavia serves Octavia's v2 REST API over l4lb's objects, so the tools that drive
// Octavia (the openstack CLI, gophercloud and so cloud-provider-openstack, Terraform, Heat)
// drive l4lb unchanged. Every object the API creates is an ordinary LoadBalancer, Listener,
// Pool or HealthMonitor in the namespace of the caller's Keystone project (tenancy.go), and
// every such object made with kubectl shows in the API: the objects are the only state.
//
// IDs are the objects' UIDs; a member's ID is derived from its pool's UID and its name.
// Octavia's free-form names are kept in an annotation and Kubernetes names derived from them.
// Fields l4lb does not implement are refused with 400 naming them, never dropped.
package octavia

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l4lb/l4lb/internal/openstack"
)

// NameAnnotation keeps an object's Octavia name.
const NameAnnotation = "lb.l4lb.io/octavia-name"

// Server is the Octavia v2 API.
type Server struct {
	// Client reads and writes the objects (uncached: what a caller wrote, it reads back).
	Client client.Client
	// Validate checks a Keystone token (openstack.Keystone.Validate).
	Validate func(ctx context.Context, token string) (openstack.Identity, error)
	// CreateNamespaces makes a namespace for a project on its first write; false refuses the
	// write until an administrator labels one (tenancy.go).
	CreateNamespaces bool
	// KeystoneDefaultRoles also grants Keystone's own member and reader roles what
	// load-balancer_member and load-balancer_observer have, as Octavia's policy does with
	// [oslo_policy] enforce_new_defaults; false is Octavia's default: only its own roles.
	KeystoneDefaultRoles bool
	// Stats reads the figures of the stats calls (AgentMetrics.Node); nil answers them 501.
	Stats Statistics
	// Agents lists the nodes that stand by for every VIP (AgentMetrics.Nodes), the BACKUP
	// amphorae; nil lists only the holders.
	Agents Agents
	// RequestTimeout bounds each request's calls to Keystone and to the Kubernetes API, so
	// that one of them stalled answers 503 instead of holding the client (DefaultRequestTimeout
	// when zero).
	RequestTimeout time.Duration
	Log            *slog.Logger
}

// DefaultRequestTimeout is how long a request may wait on Keystone and the Kubernetes API.
const DefaultRequestTimeout = 30 * time.Second

// maxBody is the largest request body accepted: Octavia's (oslo.middleware's
// max_request_body_size), larger than any load balancer tree, small enough that a client
// cannot make the server hold much.
const maxBody = 114688

// Handler routes Octavia's paths.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.notFoundRoute)
	mux.HandleFunc("GET /{$}", s.versions)
	mux.HandleFunc("GET /v2", s.version)
	mux.HandleFunc("GET /v2/{$}", s.version)
	mux.HandleFunc("GET /v2.0", s.version)
	mux.HandleFunc("GET /v2.0/{$}", s.version)
	api := func(pattern string, h func(w http.ResponseWriter, r *http.Request, c *caller) error) {
		mux.HandleFunc(pattern, s.authenticated(h))
	}
	// /v2.0 is Octavia's other spelling of /v2; gophercloud uses it. Octavia serves every
	// collection both under lbaas/ and directly under the version (gophercloud's quotas call
	// /v2.0/quotas).
	for _, base := range []string{"/v2/lbaas/", "/v2.0/lbaas/", "/v2/", "/v2.0/"} {
		api("GET "+base+"providers", s.providers)
		api("GET "+base+"quotas", s.listQuotas)
		api("GET "+base+"quotas/{project}", s.getQuota)
		api("GET "+base+"quotas/{project}/default", s.defaultQuota)
		api("PUT "+base+"quotas/{project}", s.updateQuota)
		api("DELETE "+base+"quotas/{project}", s.deleteQuota)
		api("GET "+base+"flavors", emptyList("flavors"))
		api("GET "+base+"flavorprofiles", emptyList("flavorprofiles"))
		api("GET "+base+"availabilityzones", emptyList("availability_zones"))
		api("GET "+base+"availabilityzoneprofiles", emptyList("availability_zone_profiles"))
		for _, k := range []kind{loadBalancers, listeners, pools, healthMonitors} {
			api("GET "+base+k.plural, s.list(k))
			api("POST "+base+k.plural, s.create(k))
			api("GET "+base+k.plural+"/{id}", s.get(k))
			api("PUT "+base+k.plural+"/{id}", s.update(k))
			api("DELETE "+base+k.plural+"/{id}", s.delete(k))
		}
		api("GET "+base+"loadbalancers/{id}/status", s.statusTree)
		api("PUT "+base+"loadbalancers/{id}/failover", s.failover)
		api("GET "+base+"loadbalancers/{id}/stats", s.stats(loadBalancers))
		api("GET "+base+"listeners/{id}/stats", s.stats(listeners))
		api("GET "+base+"pools/{pool}/members", s.listMembers)
		api("POST "+base+"pools/{pool}/members", s.createMember)
		api("GET "+base+"pools/{pool}/members/{id}", s.getMember)
		api("PUT "+base+"pools/{pool}/members", s.batchMembers)
		api("PUT "+base+"pools/{pool}/members/{id}", s.updateMember)
		api("DELETE "+base+"pools/{pool}/members/{id}", s.deleteMember)
	}
	for _, base := range []string{"/v2/octavia/", "/v2.0/octavia/"} {
		api("GET "+base+"amphorae", s.listAmphorae)
		api("GET "+base+"amphorae/{id}", s.getAmphora)
	}
	return mux
}

// apiError is an error with the status code Octavia answers it with.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func notFound(what, id string) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf("%s %s not found.", what, id)}
}

func conflict(format string, a ...any) error {
	return &apiError{http.StatusConflict, fmt.Sprintf(format, a...)}
}

func forbidden() error {
	return &apiError{http.StatusForbidden, "Policy does not allow this request to be performed."}
}

// writeError answers as Octavia does: {"faultcode", "faultstring", "debuginfo"}.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		code = ae.code
	case apierrors.IsNotFound(err):
		code = http.StatusNotFound
	case quotaMet(err):
		// Octavia's quotas are the namespace's ResourceQuota (count/loadbalancers.lb.l4lb.io
		// and the like): exceeding one is the user's 403, as with Octavia.
		code = http.StatusForbidden
		err = &apiError{code, "Quota has been met: " + err.Error()}
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		code = http.StatusConflict
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		code = http.StatusBadRequest
	case unavailable(err):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	}
	if code >= 500 {
		s.Log.Error("octavia API", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	fault := "Client"
	if code >= 500 {
		fault = "Server"
	}
	writeJSON(w, code, map[string]any{"faultcode": fault, "faultstring": err.Error(), "debuginfo": nil})
}

// quotaMet reports whether the API server refused a write for a ResourceQuota of the
// namespace (any other refusal is this server's own rights, a 500).
func quotaMet(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// unavailable reports whether err means Keystone or the Kubernetes API did not answer in
// time or asked to be called later: the request may succeed again as it is.
func unavailable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// body decodes {"<key>": {...}} and returns the object.
func body(r *http.Request, key string) (map[string]any, error) {
	var b map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
			return nil, &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("Request is too large: more than %d bytes.", tooLarge.Limit)}
		}
		return nil, badRequest("Invalid input: the body is not JSON: %v", err)
	}
	raw, ok := b[key]
	if !ok {
		return nil, badRequest("Invalid input: the body has no %q", key)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, badRequest("Invalid input for %s: %v", key, err)
	}
	return obj, nil
}

// versions is Octavia's version discovery document: every API version up to the newest whose
// features l4lb serves, that one CURRENT. Clients turn features on by the last one:
// cloud-provider-openstack's timeouts (v2.1), tags (v2.5) and loadBalancerSourceRanges as
// allowed_cidrs (v2.12); Octavia's test suite its UDP (v2.1) and SOURCE_IP_PORT (v2.13) tests.
func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	var vs []any
	for minor := 0; minor <= apiMinor; minor++ {
		status := "SUPPORTED"
		if minor == apiMinor {
			status = "CURRENT"
		}
		vs = append(vs, map[string]any{"id": fmt.Sprintf("v2.%d", minor), "status": status, "updated": "2019-09-18T00:00:00Z",
			"links": []any{map[string]any{"href": baseURL(r) + "/v2", "rel": "self"}}})
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": vs})
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"version": map[string]any{"id": fmt.Sprintf("v2.%d", apiMinor), "status": "CURRENT",
		"updated": "2019-09-18T00:00:00Z", "links": []any{map[string]any{"href": baseURL(r) + "/v2", "rel": "self"}}}})
}

// apiMinor is the newest Octavia API version (v2.apiMinor) whose features l4lb serves: v2.13,
// SOURCE_IP_PORT. Flavors (v2.6) are served as an empty list; docs/octavia-api.md lists what
// each version brings and what l4lb does with it.
const apiMinor = 13

// notFoundRoute answers a path Octavia does not have, or l4lb does not serve, in Octavia's
// error shape (a client parses faultstring), never as plain text.
func (s *Server) notFoundRoute(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &apiError{http.StatusNotFound, fmt.Sprintf("The resource could not be found: %s %s", r.Method, r.URL.Path)})
}

// emptyList answers a collection l4lb has nothing in (flavors, flavor profiles, availability
// zones: one kind of load balancer, on every node).
func emptyList(plural string) func(w http.ResponseWriter, r *http.Request, c *caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		writeJSON(w, http.StatusOK, map[string]any{plural: []any{}, plural + "_links": []any{}})
		return nil
	}
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

func (s *Server) providers(w http.ResponseWriter, r *http.Request, c *caller) error {
	out, err := page(r, "providers", []map[string]any{{"name": Provider, "description": "layer-4 load balancers on Kubernetes (l4lb)"}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Provider is the provider name l4lb answers to; "amphora" and "octavia", Octavia's defaults,
// are accepted on create as the same.
const Provider = "l4lb"
