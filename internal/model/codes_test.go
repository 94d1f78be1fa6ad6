package model

import (
	"strings"
	"testing"
)

func TestParseCodes(t *testing.T) {
	cases := []struct {
		in      string
		match   []int
		nomatch []int
		bad     bool
	}{
		{in: "200", match: []int{200}, nomatch: []int{201, 199}},
		{in: "200,202", match: []int{200, 202}, nomatch: []int{201}},
		{in: "200-204", match: []int{200, 202, 204}, nomatch: []int{205, 199}},
		{in: "200-204,301,500-599", match: []int{203, 301, 503}, nomatch: []int{302, 404}},
		{in: "", bad: true},
		{in: "20", bad: true},
		{in: "600", bad: true},
		{in: "204-200", bad: true},
		{in: "200,", bad: true},
		{in: "abc", bad: true},
	}
	for _, tc := range cases {
		c, err := ParseCodes(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q accepted", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		for _, m := range tc.match {
			if !c.Match(m) {
				t.Errorf("%q does not match %d", tc.in, m)
			}
		}
		for _, m := range tc.nomatch {
			if c.Match(m) {
				t.Errorf("%q matches %d", tc.in, m)
			}
		}
	}
}

func FuzzParseCodes(f *testing.F) {
	for _, s := range []string{"200", "200,202", "200-204", "1-2", ",", "999-100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCodes(s)
		if err != nil {
			return
		}
		for _, r := range c {
			if r.Low < 100 || r.High > 599 || r.Low > r.High {
				t.Fatalf("%q parsed to a bad range %+v", s, r)
			}
		}
		if strings.Count(s, ",")+1 != len(c) {
			t.Fatalf("%q: %d ranges", s, len(c))
		}
	})
}

func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "2001:db8::/32", "1.2.3.4/33", "::/0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDRs([]string{s})
		if err == nil && (len(p) != 1 || !p[0].IsValid() || p[0] != p[0].Masked()) {
			t.Fatalf("%q parsed to %v", s, p)
		}
	})
}
