package octavia

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Query parameters that are not filters.
var queryControls = map[string]bool{"limit": true, "marker": true, "page_reverse": true, "fields": true,
	"sort": true, "sort_key": true, "sort_dir": true, "additive_only": true}

// parentFilters are Octavia's filters by a parent's ID (cloud-provider-openstack lists a load
// balancer's listeners and pools with ?loadbalancer_id=): the objects show the parent in a
// list of references.
var parentFilters = map[string]string{"loadbalancer_id": "loadbalancers", "listener_id": "listeners", "pool_id": "pools"}

// matches reports whether item passes the filter key=vals.
func matches(item map[string]any, key string, vals []string) bool {
	switch key {
	case "tags", "tags-any", "not-tags", "not-tags-any":
		// Octavia's tag filters: each value a comma-separated list; tags needs all of them,
		// tags-any one; not-tags excludes objects with all, not-tags-any with any.
		var want []string
		for _, v := range vals {
			want = append(want, strings.Split(v, ",")...)
		}
		have, _ := item["tags"].([]string)
		all := !slices.ContainsFunc(want, func(t string) bool { return !slices.Contains(have, t) })
		some := slices.ContainsFunc(want, func(t string) bool { return slices.Contains(have, t) })
		return map[string]bool{"tags": all, "tags-any": some, "not-tags": !all, "not-tags-any": !some}[key]
	}
	if list, ok := parentFilters[key]; ok {
		if _, own := item[key]; !own {
			refs, _ := item[list].([]any)
			return slices.ContainsFunc(refs, func(ref any) bool {
				m, _ := ref.(map[string]any)
				return slices.Contains(vals, attrString(m["id"]))
			})
		}
	}
	v := item[key]
	if b, ok := v.(bool); ok { // admin_state_up=True, as the CLI sends it
		return slices.ContainsFunc(vals, func(s string) bool { return strings.EqualFold(s, strconv.FormatBool(b)) })
	}
	return slices.Contains(vals, attrString(v))
}

// filterable reports whether key names something the items can be filtered on.
func filterable(item map[string]any, key string) bool {
	if _, ok := item[key]; ok {
		return true
	}
	if strings.HasPrefix(key, "tags") || strings.HasPrefix(key, "not-tags") {
		_, ok := item["tags"]
		return ok
	}
	_, ok := item[parentFilters[key]]
	return ok
}

// page answers a list call as Octavia does: filters by attribute (?name=x&protocol=TCP),
// sorting (?sort=name:asc,created_at or sort_key/sort_dir), pagination (limit, marker,
// page_reverse) with links to the next and previous pages, and fields= to thin the objects.
func page(r *http.Request, plural string, items []map[string]any) (map[string]any, error) {
	q := r.URL.Query()
	for key, vals := range q {
		if queryControls[key] {
			continue
		}
		if len(items) > 0 && !filterable(items[0], key) {
			return nil, badRequest("Invalid filter: %s is not an attribute of %s", key, plural)
		}
		items = slices.DeleteFunc(items, func(m map[string]any) bool { return !matches(m, key, vals) })
	}
	keys, err := sortKeys(q)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(items, func(a, b map[string]any) int {
		for _, k := range keys {
			c := cmp.Compare(attrString(a[k.name]), attrString(b[k.name]))
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0 // the order given: a pool's members as added, objects by name
	})
	reverse := truthy(q.Get("page_reverse"))
	if reverse {
		slices.Reverse(items)
	}
	start := 0
	if marker := q.Get("marker"); marker != "" {
		i := slices.IndexFunc(items, func(m map[string]any) bool { return m["id"] == marker })
		if i < 0 {
			return nil, notFound("Marker", marker)
		}
		start = i + 1
	}
	items = items[start:]
	links := []any{}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, badRequest("Invalid input: limit %q", l)
		}
		if n > 0 && len(items) > n {
			items = items[:n]
			links = append(links, map[string]any{"rel": "next", "href": pageURL(r, items[n-1]["id"], false)})
		}
	}
	if q.Get("marker") != "" && len(items) > 0 {
		links = append(links, map[string]any{"rel": "previous", "href": pageURL(r, items[0]["id"], true)})
	}
	if reverse {
		slices.Reverse(items)
	}
	if f := q["fields"]; len(f) > 0 {
		var want []string
		for _, x := range f {
			want = append(want, strings.Split(x, ",")...)
		}
		for i, m := range items {
			thin := map[string]any{}
			for _, k := range want {
				if v, ok := m[k]; ok {
					thin[k] = v
				}
			}
			items[i] = thin
		}
	}
	out := []any{}
	for _, m := range items {
		out = append(out, m)
	}
	return map[string]any{plural: out, plural + "_links": links}, nil
}

type sortKey struct {
	name string
	desc bool
}

func sortKeys(q url.Values) ([]sortKey, error) {
	var keys []sortKey
	for _, s := range q["sort"] {
		for _, part := range strings.Split(s, ",") {
			name, dir, _ := strings.Cut(part, ":")
			keys = append(keys, sortKey{name, dir == "desc"})
		}
	}
	dirs := q["sort_dir"]
	for i, name := range q["sort_key"] {
		k := sortKey{name: name}
		if i < len(dirs) {
			k.desc = dirs[i] == "desc"
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		if k.name == "" {
			return nil, badRequest("Invalid sort key")
		}
	}
	if len(keys) == 0 {
		keys = []sortKey{{name: "created_at"}}
	}
	return keys, nil
}

func pageURL(r *http.Request, marker any, previous bool) string {
	q := r.URL.Query()
	q.Set("marker", fmt.Sprint(marker))
	if previous {
		q.Set("page_reverse", "true")
	} else {
		q.Del("page_reverse")
	}
	return baseURL(r) + r.URL.Path + "?" + q.Encode()
}

// attrString is an attribute as a filter compares it: booleans as true/false, numbers in
// decimal, null as "".
func attrString(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
