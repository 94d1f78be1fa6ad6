package octavia

import (
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// input is a request's object, read field by field; the first bad field is kept as the error.
type input struct {
	obj map[string]any
	err error
}

// newInput refuses the fields not in allowed, unless null (clients send unset fields as
// null): l4lb does not implement them, and a field silently dropped is a setting lost.
func newInput(obj map[string]any, allowed ...string) *input {
	var unknown []string
	for k, v := range obj {
		if v == nil || slices.Contains(allowed, k) || k == "tags" && isEmptyList(v) {
			continue
		}
		unknown = append(unknown, k)
	}
	in := &input{obj: obj}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		in.err = badRequest("Invalid input: l4lb does not implement %s", strings.Join(unknown, ", "))
	}
	return in
}

func isEmptyList(v any) bool { l, ok := v.([]any); return ok && len(l) == 0 }

func (in *input) has(k string) bool { v, ok := in.obj[k]; return ok && v != nil }

// present reports whether the request names k at all: null unsets a field (the CLI's unset).
func (in *input) present(k string) bool { _, ok := in.obj[k]; return ok }

func (in *input) fail(format string, a ...any) {
	if in.err == nil {
		in.err = badRequest(format, a...)
	}
}

func (in *input) str(k string) string {
	v, ok := in.obj[k]
	if !ok || v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		in.fail("Invalid input for field/attribute %s: %v is not a string", k, v)
	}
	return s
}

func (in *input) num(k string) (int32, bool) {
	v, ok := in.obj[k]
	if !ok || v == nil {
		return 0, false
	}
	f, ok := v.(float64)
	if !ok || f != float64(int64(f)) || f > 1<<31-1 || f < -1<<31 {
		in.fail("Invalid input for field/attribute %s: %v is not an integer", k, v)
		return 0, false
	}
	return int32(f), true
}

func (in *input) boolean(k string) (bool, bool) {
	v, ok := in.obj[k]
	if !ok || v == nil {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		in.fail("Invalid input for field/attribute %s: %v is not a boolean", k, v)
	}
	return b, true
}

// boolPtr sets *dst when k is given.
func (in *input) boolPtr(k string, dst **bool) {
	if b, ok := in.boolean(k); ok {
		*dst = &b
	}
}

// oneOf reads k, upper-cased, and refuses values not in allowed.
func (in *input) oneOf(k string, allowed ...string) string {
	s := strings.ToUpper(in.str(k))
	if s != "" && !slices.Contains(allowed, s) {
		in.fail("Invalid input for field/attribute %s: %q is not one of %s", k, s, strings.Join(allowed, ", "))
	}
	return s
}

// millis reads a duration given in milliseconds.
func (in *input) millis(k string) *metav1.Duration {
	n, ok := in.num(k)
	if !ok {
		return nil
	}
	if n < 0 {
		in.fail("Invalid input for field/attribute %s: %d is negative", k, n)
	}
	return &metav1.Duration{Duration: time.Duration(n) * time.Millisecond}
}

func (in *input) strings(k string) []string { return listOf[string](in, k, "a string") }

func (in *input) objects(k string) []map[string]any {
	return listOf[map[string]any](in, k, "an object")
}

func (in *input) object(k string) map[string]any {
	v, ok := in.obj[k]
	if !ok || v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		in.fail("Invalid input for field/attribute %s: not an object", k)
	}
	return m
}

// listOf reads the list k, each element a T (what names it in the error).
func listOf[T any](in *input, k, what string) []T {
	v, ok := in.obj[k]
	if !ok || v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		in.fail("Invalid input for field/attribute %s: not a list", k)
		return nil
	}
	var out []T
	for _, x := range l {
		e, ok := x.(T)
		if !ok {
			in.fail("Invalid input for field/attribute %s: %v is not %s", k, x, what)
			continue
		}
		out = append(out, e)
	}
	return out
}
