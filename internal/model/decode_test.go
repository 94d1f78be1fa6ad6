package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func seedFile(t testing.TB) []byte {
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", "static", "seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeTheStaticSeed(t *testing.T) {
	objs, err := Decode(seedFile(t))
	if err != nil {
		t.Fatal(err)
	}
	res := Build(objs)
	if len(res.Problems) != 0 || len(res.Model.Listeners) != 2 || res.Model.Listeners[0].Address.String() != "127.0.10.1:443" {
		t.Fatalf("problems %v, listeners %+v", res.Problems, res.Model.Listeners)
	}
	if m := res.Model.Listeners[1].Pool.Monitor; m == nil || m.URLPath != "/health" || m.Fall != 3 {
		t.Fatalf("monitor %+v", m)
	}
}

func TestDecodeRefusals(t *testing.T) {
	cases := map[string]string{
		"apiVersion: lb.l4lb.io/v1alpha1\nkind: LoadBalancer\nmetadata: {name: x}\nspec: {provider: static}": "needs spec.vip.address",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}":                                               "document 1",
		"apiVersion: lb.l4lb.io/v1alpha1\nkind: Pool\nmetadata: {name: x}\nspec: {bogus: 1}":                 "unknown field",
		"{": "document 1",
	}
	for in, want := range cases {
		if _, err := Decode([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", in, err, want)
		}
	}
}

// FuzzDecodeAndBuild: the standalone configuration is outside input; nothing in it may panic.
func FuzzDecodeAndBuild(f *testing.F) {
	f.Add(seedFile(f))
	f.Add([]byte("---\n# only a comment\n---\n"))
	f.Add([]byte("apiVersion: lb.l4lb.io/v1alpha1\nkind: Listener\nmetadata: {name: l}\nspec: {protocolPort: 70000, allowedCIDRs: [x]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data)
		if err != nil {
			return
		}
		Build(objs)
	})
}
