package octavia

import (
	"net/http/httptest"
	"testing"
)

func TestFilters(t *testing.T) {
	items := func() []map[string]any {
		return []map[string]any{
			{"id": "a", "name": "x", "admin_state_up": true, "tags": []string{"t1", "t2"}, "loadbalancers": []any{map[string]any{"id": "lb1"}}},
			{"id": "b", "name": "y", "admin_state_up": false, "tags": []string{"t2"}, "loadbalancers": []any{map[string]any{"id": "lb2"}}},
			{"id": "c", "name": "z", "admin_state_up": true, "tags": []string{}, "loadbalancers": []any{}},
		}
	}
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"loadbalancer_id=lb1", "a"},
		{"loadbalancer_id=lb1&loadbalancer_id=lb2", "ab"},
		{"admin_state_up=True", "ac"},
		{"admin_state_up=false", "b"},
		{"tags=t2", "ab"},
		{"tags=t1,t2", "a"},
		{"tags-any=t1,nothing", "a"},
		{"not-tags=t2", "c"},
		{"not-tags-any=t1", "bc"},
		{"name=y", "b"},
	} {
		r := httptest.NewRequest("GET", "/v2/lbaas/listeners?"+tc.query, nil)
		out, err := page(r, "listeners", items())
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		got := ""
		for _, it := range out["listeners"].([]any) {
			got += it.(map[string]any)["id"].(string)
		}
		if got != tc.want {
			t.Errorf("?%s: %q, want %q", tc.query, got, tc.want)
		}
	}
	r := httptest.NewRequest("GET", "/v2/lbaas/listeners?listener_id=x", nil)
	if _, err := page(r, "listeners", items()); err == nil {
		t.Error("a filter on something listeners do not have was accepted")
	}
}
