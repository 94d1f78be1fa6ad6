package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
	"github.com/l4lb/l4lb/test/testenv"
)

// These tests run against a real kube-apiserver: what they check is what the API server itself
// accepts, refuses and defaults from the generated CRDs.

var k8s client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8s = env.Client
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

var nsCount int

// namespace makes a fresh namespace so cases never see each other's objects.
func namespace(t *testing.T) string {
	t.Helper()
	nsCount++
	name := fmt.Sprintf("t%d-%d", nsCount, time.Now().UnixNano()%100000)
	ns := object(t, "v1", "Namespace", name, "")
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// object builds an unstructured object from a spec written as YAML, exactly as a user would
// write it, so defaults and validation are the API server's alone.
func object(t *testing.T, apiVersion, kind, name, spec string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{}}
	if spec != "" {
		var s map[string]any
		if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
			t.Fatalf("bad test spec %q: %v", spec, err)
		}
		u.Object["spec"] = s
	}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetName(name)
	return u
}

func lbObject(t *testing.T, kind, name, spec string) *unstructured.Unstructured {
	return object(t, lbv1.GroupVersion.String(), kind, name, spec)
}

func create(t *testing.T, ns string, u *unstructured.Unstructured) error {
	t.Helper()
	u.SetNamespace(ns)
	return k8s.Create(context.Background(), u)
}

func readSamples(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

func TestSamplesApplyAndDefaultsLand(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testenv.Root(), "config", "samples", "*", "seed.yaml"))
	if len(files) < 2 {
		t.Fatalf("expected the openstack and static samples, found %v", files)
	}
	for _, file := range files {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			ns := namespace(t)
			objs := readSamples(t, file)
			if len(objs) != 6 {
				t.Fatalf("%s: %d objects, want the seed's 6", file, len(objs))
			}
			for _, u := range objs {
				if err := create(t, ns, u); err != nil {
					t.Fatalf("%s %s refused: %v", u.GetKind(), u.GetName(), err)
				}
			}
			ctx := context.Background()
			var l lbv1.Listener
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "listener-80"}, &l); err != nil {
				t.Fatal(err)
			}
			if *l.Spec.ConnectionLimit != -1 || l.Spec.TimeoutClientData.Duration != 50*time.Second ||
				l.Spec.TimeoutMemberConnect.Duration != 5*time.Second || l.Spec.TimeoutMemberData.Duration != 50*time.Second ||
				l.Spec.TimeoutTCPInspect.Duration != 0 || !*l.Spec.AdminStateUp {
				t.Errorf("listener defaults did not land: %+v", l.Spec)
			}
			var p lbv1.Pool
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pool-80"}, &p); err != nil {
				t.Fatal(err)
			}
			for _, m := range p.Spec.Members {
				if *m.Weight != 1 || !*m.AdminStateUp || m.Backup {
					t.Errorf("member %s defaults did not land: %+v", m.Name, m)
				}
			}
			var hm lbv1.HealthMonitor
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "healthcheck-80"}, &hm); err != nil {
				t.Fatal(err)
			}
			if hm.Spec.MaxRetriesDown != 3 || hm.Spec.ExpectedCodes != "200" || hm.Spec.HTTPMethod != "GET" ||
				hm.Spec.HTTPVersion != "" /* unset: 1.0 */ || hm.Spec.URLPath != "/health" || hm.Spec.Delay.Duration != 60*time.Second {
				t.Errorf("monitor defaults did not land: %+v", hm.Spec)
			}
			var lb lbv1.LoadBalancer
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lb-test-1"}, &lb); err != nil {
				t.Fatal(err)
			}
			if !*lb.Spec.AdminStateUp {
				t.Errorf("load balancer adminStateUp default did not land")
			}
			if lb.Spec.FloatingIP != nil && lb.Spec.FloatingIP.ReclaimPolicy != lbv1.ReclaimDelete {
				t.Errorf("floatingIP.reclaimPolicy default did not land: %q", lb.Spec.FloatingIP.ReclaimPolicy)
			}
		})
	}
}

const (
	okListener = "loadBalancerRef: {name: lb}\nprotocol: TCP\nprotocolPort: 80\n"
	okPool     = "listenerRef: {name: l}\nprotocol: TCP\nlbAlgorithm: ROUND_ROBIN\n"
	okMonitor  = "poolRef: {name: p}\ntype: HTTP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 2\n"
	okTCPMon   = "poolRef: {name: p}\ntype: TCP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 2\n"
	member     = "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80}\n"
)

func TestInvalidObjectsAreRefusedNamingTheField(t *testing.T) {
	cases := []struct {
		name, kind, spec string
		field            string // must appear in the API server's message
	}{
		{"lb provider enum", "LoadBalancer", "provider: amphora", "spec.provider"},
		{"lb two vip sources", "LoadBalancer", "provider: openstack\nvip: {subnet: a, network: b}", "spec.vip"},
		{"lb openstack without vip", "LoadBalancer", "provider: openstack", "spec.vip"},
		{"lb bad vip address", "LoadBalancer", "provider: static\nvip: {address: 300.1.1.1}", "spec.vip.address"},
		{"lb floating ip without network or address", "LoadBalancer", "provider: openstack\nvip: {subnet: s}\nfloatingIP: {reclaimPolicy: Retain}", "spec.floatingIP"},
		{"lb bad reclaim policy", "LoadBalancer", "provider: openstack\nvip: {subnet: s}\nfloatingIP: {network: n, reclaimPolicy: Keep}", "spec.floatingIP.reclaimPolicy"},
		{"lb bad floating address", "LoadBalancer", "provider: openstack\nvip: {subnet: s}\nfloatingIP: {address: nope}", "spec.floatingIP.address"},
		{"lb floating ip on static", "LoadBalancer", "provider: static\nfloatingIP: {network: n}", "spec.floatingIP"},
		{"lb description too long", "LoadBalancer", "description: " + strings.Repeat("x", 256), "spec.description"},
		{"listener protocol enum", "Listener", "loadBalancerRef: {name: lb}\nprotocol: SCTP\nprotocolPort: 80", "spec.protocol"},
		{"listener port zero", "Listener", "loadBalancerRef: {name: lb}\nprotocol: TCP\nprotocolPort: 0", "spec.protocolPort"},
		{"listener port too high", "Listener", "loadBalancerRef: {name: lb}\nprotocol: TCP\nprotocolPort: 65536", "spec.protocolPort"},
		{"listener without ref", "Listener", "protocol: TCP\nprotocolPort: 80", "spec.loadBalancerRef"},
		{"listener connection limit", "Listener", okListener + "connectionLimit: -2", "spec.connectionLimit"},
		{"listener negative timeout", "Listener", okListener + "timeoutClientData: -5s", "spec.timeoutClientData"},
		{"listener timeout over 24 days", "Listener", okListener + "timeoutMemberData: 600h", "spec.timeoutMemberData"},
		{"listener bad duration", "Listener", okListener + "timeoutMemberConnect: five", "spec.timeoutMemberConnect"},
		{"listener bad cidr", "Listener", okListener + "allowedCIDRs: [10.0.0.0/33]", "spec.allowedCIDRs[0]"},
		{"listener bad v6 cidr", "Listener", okListener + "allowedCIDRs: ['2001:db8::/129']", "spec.allowedCIDRs[0]"},
		{"pool protocol enum", "Pool", "listenerRef: {name: l}\nprotocol: HTTP\nlbAlgorithm: ROUND_ROBIN", "spec.protocol"},
		{"pool algorithm enum", "Pool", "listenerRef: {name: l}\nprotocol: TCP\nlbAlgorithm: RANDOM", "spec.lbAlgorithm"},
		{"pool without algorithm", "Pool", "listenerRef: {name: l}\nprotocol: TCP", "spec.lbAlgorithm"},
		{"pool persistence type", "Pool", okPool + "sessionPersistence: {type: HTTP_COOKIE}", "spec.sessionPersistence.type"},
		{"pool persistence granularity", "Pool", okPool + "sessionPersistence: {type: SOURCE_IP, persistenceGranularity: 255.255.0}", "spec.sessionPersistence.persistenceGranularity"},
		{"member weight too high", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80, weight: 257}", "spec.members[0].weight"},
		{"member weight negative", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80, weight: -1}", "spec.members[0].weight"},
		{"member bad address", "Pool", okPool + "members:\n- {name: a, address: 192.0.2, protocolPort: 80}", "spec.members[0].address"},
		{"member port zero", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 0}", "spec.members[0].protocolPort"},
		{"member bad monitor address", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80, monitorAddress: x}", "spec.members[0].monitorAddress"},
		{"member bad monitor port", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80, monitorPort: 70000}", "spec.members[0].monitorPort"},
		{"member duplicate name", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80}\n- {name: a, address: 192.0.2.2, protocolPort: 80}", "spec.members[1]"},
		{"member duplicate address and port", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80}\n- {name: b, address: 192.0.2.1, protocolPort: 80}", "spec.members"},
		{"monitor type enum", "HealthMonitor", "poolRef: {name: p}\ntype: SCTP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 2", "spec.type"},
		{"monitor timeout zero", "HealthMonitor", "poolRef: {name: p}\ntype: TCP\ndelay: 5s\ntimeout: 0s\nmaxRetries: 2", "spec.timeout"},
		{"monitor udp-connect delay", "HealthMonitor", "poolRef: {name: p}\ntype: UDP-CONNECT\ndelay: 2s\ntimeout: 1s\nmaxRetries: 2", "spec.delay"},
		{"monitor max retries zero", "HealthMonitor", "poolRef: {name: p}\ntype: TCP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 0", "spec.maxRetries"},
		{"monitor max retries eleven", "HealthMonitor", "poolRef: {name: p}\ntype: TCP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 11", "spec.maxRetries"},
		{"monitor max retries down", "HealthMonitor", okTCPMon + "maxRetriesDown: 11", "spec.maxRetriesDown"},
		{"monitor expected codes word", "HealthMonitor", okMonitor + "expectedCodes: ok", "spec.expectedCodes"},
		{"monitor expected codes open range", "HealthMonitor", okMonitor + "expectedCodes: 200-", "spec.expectedCodes"},
		{"monitor expected codes 600", "HealthMonitor", okMonitor + "expectedCodes: '600'", "spec.expectedCodes"},
		{"monitor url path", "HealthMonitor", okMonitor + "urlPath: health", "spec.urlPath"},
		{"monitor http method enum", "HealthMonitor", okMonitor + "httpMethod: FETCH", "spec.httpMethod"},
		{"monitor http version enum", "HealthMonitor", okMonitor + "httpVersion: '2.0'", "spec.httpVersion"},
		{"monitor url path on tcp", "HealthMonitor", okTCPMon + "urlPath: /health", "spec.urlPath"},
		{"monitor expected codes on tcp", "HealthMonitor", okTCPMon + "expectedCodes: '202'", "spec.expectedCodes"},
		{"monitor method on tcp", "HealthMonitor", okTCPMon + "httpMethod: HEAD", "spec.httpMethod"},
		{"monitor domain on tcp", "HealthMonitor", okTCPMon + "domainName: example.org", "spec.domainName"},
		{"monitor domain needs 1.1", "HealthMonitor", okMonitor + "domainName: example.org", "spec.domainName"},
		{"pool without load balancer or listener", "Pool", "protocol: TCP\nlbAlgorithm: ROUND_ROBIN", "loadBalancerRef"},
		{"monitor without pool", "HealthMonitor", "type: TCP\ndelay: 10s\ntimeout: 5s\nmaxRetries: 2", "spec.poolRef"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	ns := namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := create(t, ns, lbObject(t, tc.kind, fmt.Sprintf("bad-%d", i), tc.spec))
			if err == nil {
				t.Fatalf("the API server accepted an invalid %s", tc.kind)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("refusal does not name %s: %v", tc.field, err)
			}
		})
	}
}

func TestValidObjectsAreAccepted(t *testing.T) {
	cases := []struct{ name, kind, spec string }{
		{"static lb without address", "LoadBalancer", "provider: static"},
		{"lb with empty spec", "LoadBalancer", ""},
		{"openstack lb on a network with an adopted floating ip", "LoadBalancer", "provider: openstack\nvip: {network: private-net}\nfloatingIP: {address: 203.0.113.5, reclaimPolicy: Retain}"},
		{"udp listener with v4 and v6 cidrs", "Listener", "loadBalancerRef: {name: lb}\nprotocol: UDP\nprotocolPort: 53\nallowedCIDRs: [192.0.2.0/24, '2001:db8::/32']"},
		{"proxy v2 pool with persistence", "Pool", "listenerRef: {name: l}\nprotocol: PROXYV2\nlbAlgorithm: SOURCE_IP\nsessionPersistence: {type: SOURCE_IP, persistenceGranularity: 255.255.255.0}\n" + member},
		{"ipv6 member with weight 0 and backup", "Pool", okPool + "members:\n- {name: a, address: '2001:db8::1', protocolPort: 80, weight: 0}\n- {name: b, address: 192.0.2.2, protocolPort: 80, weight: 256, backup: true, monitorAddress: 192.0.2.9, monitorPort: 8081}"},
		{"pool on its load balancer only", "Pool", "loadBalancerRef: {name: lb}\nprotocol: UDP\nlbAlgorithm: SOURCE_IP_PORT\n" + member},
		{"same address other port", "Pool", okPool + "members:\n- {name: a, address: 192.0.2.1, protocolPort: 80}\n- {name: b, address: 192.0.2.1, protocolPort: 81}"},
		{"expected codes list", "HealthMonitor", okMonitor + "expectedCodes: 200,202-204\nhttpVersion: '1.1'\ndomainName: app.example.org\nhttpMethod: HEAD"},
		{"udp-connect at 3s", "HealthMonitor", "poolRef: {name: p}\ntype: UDP-CONNECT\ndelay: 3s\ntimeout: 2s\nmaxRetries: 1"},
		{"timeout longer than delay, as Octavia's API tests send", "HealthMonitor", "poolRef: {name: p}\ntype: PING\ndelay: 2s\ntimeout: 3s\nmaxRetries: 4\nmaxRetriesDown: 5"},
		{"ping monitor", "HealthMonitor", "poolRef: {name: p}\ntype: PING\ndelay: 1s\ntimeout: 500ms\nmaxRetries: 10\nmaxRetriesDown: 1"},
	}
	ns := namespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := create(t, ns, lbObject(t, tc.kind, fmt.Sprintf("ok-%d", i), tc.spec)); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

func TestUpdates(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	base := map[string]string{
		"LoadBalancer":  "provider: static\nvip: {address: 192.0.2.10}",
		"Listener":      okListener,
		"Pool":          okPool + member,
		"HealthMonitor": okMonitor,
	}
	for kind, spec := range base {
		if err := create(t, ns, lbObject(t, kind, "u", spec)); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
	}
	cases := []struct {
		name, kind string
		path       []string
		value      any
		refused    string // empty: the update must pass
	}{
		{"listener connection limit", "Listener", []string{"spec", "connectionLimit"}, int64(100), ""},
		{"listener cidrs", "Listener", []string{"spec", "allowedCIDRs"}, []any{"198.51.100.0/24"}, ""},
		{"listener admin down", "Listener", []string{"spec", "adminStateUp"}, false, ""},
		{"pool algorithm", "Pool", []string{"spec", "lbAlgorithm"}, "LEAST_CONNECTIONS", ""},
		{"member weight", "Pool", []string{"spec", "members"}, []any{map[string]any{"name": "a", "address": "192.0.2.1", "protocolPort": int64(80), "weight": int64(5)}}, ""},
		{"member added", "Pool", []string{"spec", "members"}, []any{
			map[string]any{"name": "a", "address": "192.0.2.1", "protocolPort": int64(80)},
			map[string]any{"name": "b", "address": "192.0.2.2", "protocolPort": int64(80)}}, ""},
		{"monitor delay", "HealthMonitor", []string{"spec", "delay"}, "20s", ""},
		{"lb description", "LoadBalancer", []string{"spec", "description"}, "changed", ""},
		{"listener protocol", "Listener", []string{"spec", "protocol"}, "UDP", "spec.protocol"},
		{"listener port", "Listener", []string{"spec", "protocolPort"}, int64(81), "spec.protocolPort"},
		{"listener lb ref", "Listener", []string{"spec", "loadBalancerRef", "name"}, "other", "spec.loadBalancerRef"},
		{"pool protocol", "Pool", []string{"spec", "protocol"}, "PROXY", "spec.protocol"},
		{"pool with neither reference", "Pool", []string{"spec", "listenerRef"}, nil, "a pool names its loadBalancerRef, its listenerRef, or both"},
		{"pool moved to another listener", "Pool", []string{"spec", "listenerRef", "name"}, "other", ""},
		{"pool names its load balancer", "Pool", []string{"spec", "loadBalancerRef"}, map[string]any{"name": "lb"}, ""},
		{"pool load balancer ref", "Pool", []string{"spec", "loadBalancerRef", "name"}, "other", "spec.loadBalancerRef"},
		{"pool load balancer ref removed", "Pool", []string{"spec", "loadBalancerRef"}, nil, "spec.loadBalancerRef"},
		{"pool serving no listener", "Pool", []string{"spec", "listenerRef"}, nil, ""},
		{"member address", "Pool", []string{"spec", "members"}, []any{map[string]any{"name": "a", "address": "192.0.2.99", "protocolPort": int64(80)}}, "spec.members[0].address"},
		{"member port", "Pool", []string{"spec", "members"}, []any{map[string]any{"name": "a", "address": "192.0.2.1", "protocolPort": int64(81)}}, "spec.members[0].protocolPort"},
		{"monitor type", "HealthMonitor", []string{"spec", "type"}, "HTTPS", "spec.type"},
		{"monitor pool ref", "HealthMonitor", []string{"spec", "poolRef", "name"}, "other", "spec.poolRef"},
		{"lb vip", "LoadBalancer", []string{"spec", "vip", "address"}, "192.0.2.11", "spec.vip"},
		{"lb provider", "LoadBalancer", []string{"spec", "provider"}, "openstack", "spec.provider"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := lbObject(t, tc.kind, "u", "")
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "u"}, u); err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(u.Object, tc.value, tc.path...); err != nil {
				t.Fatal(err)
			}
			err := k8s.Update(ctx, u)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("valid update refused: %v", err)
			case tc.refused != "" && err == nil:
				t.Fatalf("create-only change to %s accepted", tc.refused)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Fatalf("refusal does not name %s: %v", tc.refused, err)
			}
		})
	}
}

// TestAddressObjectsAreValidated: the administrators' cluster-wide kinds are refused by the
// API server with the field named, like the tenants' kinds.
func TestAddressObjectsAreValidated(t *testing.T) {
	cases := []struct {
		name, kind, spec, field string // field "" means accepted
	}{
		{"pool with nothing to give", "VIPPool", "namespaces: [a]", "a pool needs addresses, subnets or floatingIPNetworks"},
		{"pool of Neutron subnets and networks", "VIPPool", "subnets: [private-subnet]\nfloatingIPNetworks: [public-net]\nnamespaces: [a]", ""},
		{"pool with an address, not a CIDR", "VIPPool", "addresses: [198.51.100.7]", "spec.addresses[0]"},
		{"pool with a bad CIDR", "VIPPool", "addresses: [198.51.100.0/33]", "spec.addresses[0]"},
		{"pool with a bad selector", "VIPPool", "addresses: [198.51.100.0/24]\nnamespaceSelector: {matchExpressions: [{key: team, operator: Near}]}", "spec.namespaceSelector"},
		{"pool for two namespaces, v4 and v6", "VIPPool", "addresses: [198.51.100.0/24, '2001:db8::/64']\nnamespaces: [a, b]\nautoAssign: false", ""},
		{"policy with a bad allow", "AddressPolicy", "allow: [localhost]", "spec.allow[0]"},
		{"policy with a bad deny", "AddressPolicy", "deny: ['fe80::/129']", "spec.deny[0]"},
		{"policy allowing loopback, denying a network", "AddressPolicy", "allow: [127.0.0.0/8]\ndeny: [10.0.0.0/8]", ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), lbObject(t, tc.kind, fmt.Sprintf("cluster-%d", i), tc.spec))
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && err == nil:
				t.Fatalf("the API server accepted an invalid %s", tc.kind)
			case tc.field != "" && !strings.Contains(err.Error(), tc.field):
				t.Fatalf("refusal does not name %s: %v", tc.field, err)
			}
		})
	}
}
