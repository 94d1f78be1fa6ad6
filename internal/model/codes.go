package model

import (
	"fmt"
	"strconv"
	"strings"
)

// Codes is a parsed expectedCodes: a list of status codes and ranges.
type Codes []CodeRange

// CodeRange is an inclusive range of HTTP status codes.
type CodeRange struct{ Low, High int }

// ParseCodes parses Octavia's expected_codes: "200", "200,202", "200-204" or a list of those.
func ParseCodes(s string) (Codes, error) {
	if s == "" {
		return nil, fmt.Errorf("expectedCodes is empty")
	}
	var out Codes
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		l, err := parseCode(lo)
		if err != nil {
			return nil, err
		}
		h := l
		if isRange {
			if h, err = parseCode(hi); err != nil {
				return nil, err
			}
			if h < l {
				return nil, fmt.Errorf("expectedCodes range %q is backwards", part)
			}
		}
		out = append(out, CodeRange{l, h})
	}
	return out, nil
}

func parseCode(s string) (int, error) {
	if len(s) != 3 {
		return 0, fmt.Errorf("expectedCodes: %q is not a three-digit status code", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("expectedCodes: %q is not a status code between 100 and 599", s)
	}
	return n, nil
}

// Match reports whether code is expected.
func (c Codes) Match(code int) bool {
	for _, r := range c {
		if code >= r.Low && code <= r.High {
			return true
		}
	}
	return false
}
