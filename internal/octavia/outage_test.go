package octavia_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/loadbalancer/v2/loadbalancers"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/internal/openstack"
	"github.com/l4lb/l4lb/test/cloudtest"
)

// TestABadDay is the Octavia API when what it stands on stalls, with its default request
// time (30 s) and token cache (30 s). Keystone paused (its process stopped: connections
// accepted, nothing answered): a token validated before keeps working; a new one is answered
// 503 with Retry-After when the request's time is up, never 401 (the token is not wrong) and
// never a hang; Keystone back, it works. The Kubernetes API server paused: a write is answered
// 503 the same way and leaves nothing behind; back, the same write goes through. A body over
// Octavia's limit is refused 413, whatever it holds.
func TestABadDay(t *testing.T) {
	defer catch(t)
	l := newLab(t)
	ctx := l.ctx
	l.ks.CacheFor = openstack.DefaultTokenCache
	alice, bob := l.lb("alice"), l.lb("bob")
	must(loadbalancers.List(alice, nil).AllPages(ctx)) // alice's token, validated and cached

	resume := must(cloudtest.PauseKeystone())
	t.Cleanup(resume)
	must(loadbalancers.List(alice, nil).AllPages(ctx))
	code, header, answer := l.raw(http.MethodGet, "/v2/lbaas/loadbalancers", l.users["bob"].Token(), nil)
	if code != http.StatusServiceUnavailable || header.Get("Retry-After") == "" || !strings.Contains(answer, "Keystone cannot validate the token now") {
		t.Fatalf("a new token while Keystone is paused: HTTP %d, Retry-After %q: %s", code, header.Get("Retry-After"), answer)
	}
	resume()
	must(loadbalancers.List(bob, nil).AllPages(ctx))

	pid := must(l.env.APIServerPID())
	mustDo(syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	create := loadbalancers.CreateOpts{Name: "stalled", VipAddress: "198.51.100.23"}
	_, err := loadbalancers.Create(ctx, alice, create).Extract()
	wantCode(t, err, http.StatusServiceUnavailable, "a write while the Kubernetes API server is paused")
	mustDo(syscall.Kill(pid, syscall.SIGCONT))
	var lbs lbv1.LoadBalancerList
	mustDo(l.k8s.List(ctx, &lbs))
	if len(lbs.Items) != 0 {
		t.Fatalf("the write refused with 503 left %d load balancers", len(lbs.Items))
	}
	must(loadbalancers.Create(ctx, alice, create).Extract())

	big := []byte(`{"loadbalancer": {"name": "big", "description": "` + strings.Repeat("x", 200000) + `"}}`)
	if code, _, answer := l.raw(http.MethodPost, "/v2/lbaas/loadbalancers", l.users["alice"].Token(), big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 200 kB body: HTTP %d: %s", code, answer)
	}
}

// raw makes one request to the API with token (none when empty) and body, and returns the
// answer.
func (l *lab) raw(method, path, token string, body []byte) (int, http.Header, string) {
	req := must(http.NewRequestWithContext(context.Background(), method, l.url+path, bytes.NewReader(body)))
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp := must(http.DefaultClient.Do(req))
	defer resp.Body.Close()
	b := must(io.ReadAll(resp.Body))
	return resp.StatusCode, resp.Header, string(b)
}
