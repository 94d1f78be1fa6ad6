//go:build conformance

package octavia_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/test/testenv"
)

// octaviaRegion is where hack/octavia-reference.sh's real Octavia is in Keystone's catalog.
const octaviaRegion = "RegionTwo"

// TestCLIOutputsAsOctavias runs the openstack CLI calls clients make beyond the seed against
// l4lb and against the real Octavia (Debian's Zed packages with no-op drivers, started by
// hack/octavia-reference.sh, in the catalog's RegionTwo), the same calls in the same order,
// and compares what the CLI prints field by field: the same fields for every object, the
// same values but for those that name what each cloud made (IDs, addresses, times, the
// provider), the same rows for every list.
func TestCLIOutputsAsOctavias(t *testing.T) {
	defer catch(t)
	_, env, dir := cloudLab(t)
	// The CLI takes --os-region-name only among the regions the cloud lists.
	clouds2 := filepath.Join(dir, "clouds-regions.yaml")
	mustDo(os.WriteFile(clouds2, []byte(strings.Replace(string(cloudsYAML), "    region_name: RegionOne\n",
		"    region_name: RegionOne\n    regions: [RegionOne, "+octaviaRegion+"]\n", 1)), 0o600))
	env = append(env, "OS_CLIENT_CONFIG_FILE="+clouds2)
	script := exec.Command(filepath.Join(testenv.Root(), "hack", "octavia-catalog.sh"), "http://127.0.0.1:19876", octaviaRegion)
	script.Env = env
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("registering the real Octavia (hack/octavia-reference.sh up first): %v\n%s", err, out)
	}
	subnet := strings.TrimSpace(string(must(openstackCLI(env, "subnet", "show", "private-subnet", "-f", "value", "-c", "id"))))
	project := strings.TrimSpace(string(must(openstackCLI(env, "project", "show", "admin", "-f", "value", "-c", "id"))))

	clouds := map[string][]string{"l4lb": nil, "octavia": {"--os-region-name", octaviaRegion}}
	// cli runs the call on one cloud; "{id:NAME}" in args is that cloud's ID of load balancer
	// NAME, looked up once (the name may go).
	ids := map[string]string{}
	resolve := func(cloud, a string) string {
		name, ok := strings.CutPrefix(a, "{id:")
		if !ok {
			return a
		}
		name = strings.TrimSuffix(name, "}")
		if id, ok := ids[cloud+"/"+name]; ok {
			return id
		}
		out, err := openstackCLI(env, append(slices.Clone(clouds[cloud]), "loadbalancer", "show", name, "-f", "value", "-c", "id")...)
		if err != nil {
			t.Fatalf("%s: the ID of %s: %v", cloud, name, err)
		}
		ids[cloud+"/"+name] = strings.TrimSpace(string(out))
		return ids[cloud+"/"+name]
	}
	cli := func(cloud string, args ...string) (string, error) {
		for i, a := range args {
			args[i] = resolve(cloud, a)
		}
		cmd := exec.Command("openstack", append(slices.Clone(clouds[cloud]), args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	waitActive := func(cloud, name string) {
		name = resolve(cloud, name)
		for end := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
			out, _ := cli(cloud, "loadbalancer", "show", name, "-f", "value", "-c", "provisioning_status")
			if out == "ACTIVE" {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: %s is %q two minutes on", cloud, name, out)
			}
		}
	}
	t.Cleanup(func() {
		for cloud := range clouds {
			for _, name := range []string{"cmp_a", "cmp_b"} {
				cli(cloud, "loadbalancer", "delete", "--cascade", name)
			}
			cli(cloud, "loadbalancer", "quota", "reset", project)
		}
	})

	// What each cloud makes or holds on its own, and so differs between them; and the
	// operating status, which Octavia's health manager sets from amphorae that the no-op
	// drivers never start (OFFLINE there, what l4lb's dataplane reports here).
	own := map[string]bool{"operating_status": true, "id": true, "created_at": true, "updated_at": true, "vip_address": true, "vip_port_id": true,
		"vip_network_id": true, "provider": true, "project_id": true, "loadbalancers": true, "listeners": true,
		"pools": true, "default_pool_id": true, "loadbalancer_id": true, "listener_id": true, "compute_id": true,
		"lb_network_ip": true, "ha_ip": true, "ha_port_id": true, "vrrp_ip": true, "vrrp_port_id": true,
		"cert_expiration": true, "cert_busy": true, "image_id": true, "compute_flavor": true, "cached_zone": true,
		"vrrp_interface": true, "vrrp_id": true, "vrrp_priority": true, "role": true, "status": true,
		"healthmonitor_id": true, "members": true}
	steps := []struct {
		args []string
		// show: a JSON object compared field by field; list: rows compared (sorted when
		// unordered); run: both succeed, or both fail.
		kind    string
		waitFor string // the load balancer to wait ACTIVE for after the call
	}{
		{[]string{"loadbalancer", "create", "--vip-subnet-id", subnet, "--name", "cmp_a", "--description", "made by the CLI", "--wait", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "create", "--vip-subnet-id", subnet, "--name", "cmp_b", "--wait", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "listener", "create", "--name", "cmp_a_80", "--protocol", "TCP", "--protocol-port", "80", "--wait", "-f", "json", "cmp_a"}, "show", ""},
		{[]string{"loadbalancer", "listener", "create", "--name", "cmp_b_53", "--protocol", "UDP", "--protocol-port", "53", "--wait", "-f", "json", "cmp_b"}, "show", ""},
		{[]string{"loadbalancer", "pool", "create", "--name", "cmp_a_pool", "--listener", "cmp_a_80", "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN", "--wait", "-f", "json"}, "show", ""},
		// SOURCE_IP, not SOURCE_IP_PORT: Octavia's amphora provider refuses that one (501),
		// l4lb's takes it, as the OVN provider's does.
		{[]string{"loadbalancer", "pool", "create", "--name", "cmp_b_pool", "--loadbalancer", "cmp_b", "--protocol", "UDP", "--lb-algorithm", "SOURCE_IP", "--wait", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "member", "create", "--name", "m1", "--address", "192.0.2.11", "--protocol-port", "8080", "--weight", "3", "--subnet-id", subnet, "--wait", "-f", "json", "cmp_a_pool"}, "show", ""},
		{[]string{"loadbalancer", "healthmonitor", "create", "--name", "hm", "--delay", "5", "--timeout", "3", "--max-retries", "2", "--type", "HTTP", "--url-path", "/health", "--wait", "-f", "json", "cmp_a_pool"}, "show", ""},
		{[]string{"loadbalancer", "unset", "--description", "cmp_a"}, "run", "cmp_a"},
		{[]string{"loadbalancer", "show", "cmp_a", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "show", "cmp_b", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "unset", "--name", "{id:cmp_b}"}, "run", "{id:cmp_b}"},
		{[]string{"loadbalancer", "show", "{id:cmp_b}", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "list", "--name", "cmp_b", "-f", "value", "-c", "name"}, "list", ""},
		{[]string{"loadbalancer", "set", "--name", "cmp_b", "{id:cmp_b}"}, "run", "cmp_b"},
		{[]string{"loadbalancer", "list", "--enable", "-f", "value", "-c", "name", "--sort-column", "name"}, "list", ""},
		{[]string{"loadbalancer", "list", "--disable", "-f", "value", "-c", "name"}, "list", ""},
		{[]string{"loadbalancer", "listener", "list", "--loadbalancer", "cmp_a", "-f", "value", "-c", "name", "-c", "protocol", "-c", "protocol_port"}, "list", ""},
		{[]string{"loadbalancer", "pool", "list", "--loadbalancer", "cmp_a", "-f", "value", "-c", "name", "-c", "lb_algorithm", "-c", "protocol"}, "list", ""},
		{[]string{"loadbalancer", "set", "--tag", "blue", "--tag", "green", "cmp_a"}, "run", "cmp_a"},
		{[]string{"loadbalancer", "show", "cmp_a", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "list", "--tags", "blue", "-f", "value", "-c", "name"}, "list", ""},
		{[]string{"loadbalancer", "list", "--not-tags", "blue", "-f", "value", "-c", "name"}, "list", ""},
		{[]string{"loadbalancer", "listener", "show", "cmp_a_80", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "pool", "show", "cmp_a_pool", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "member", "show", "cmp_a_pool", "m1", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "healthmonitor", "show", "hm", "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "status", "show", "cmp_a"}, "show", ""},
		{[]string{"loadbalancer", "failover", "cmp_a"}, "run", "cmp_a"},
		{[]string{"loadbalancer", "amphora", "list", "--loadbalancer", "{id:cmp_a}", "-f", "json"}, "columns", ""},
		{[]string{"loadbalancer", "quota", "set", "--loadbalancer", "7", project}, "run", ""},
		{[]string{"loadbalancer", "quota", "show", project, "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "quota", "reset", project}, "run", ""},
		{[]string{"loadbalancer", "quota", "show", project, "-f", "json"}, "show", ""},
		{[]string{"loadbalancer", "flavor", "list", "-f", "value"}, "list", ""},
		{[]string{"loadbalancer", "availabilityzone", "list", "-f", "value"}, "list", ""},
	}
	differences := 0
	for _, s := range steps {
		got := map[string]string{}
		failed := map[string]error{}
		for cloud := range clouds {
			got[cloud], failed[cloud] = cli(cloud, slices.Clone(s.args)...)
			if s.waitFor != "" && failed[cloud] == nil {
				waitActive(cloud, s.waitFor)
			}
		}
		call := "openstack " + strings.Join(s.args, " ")
		if (failed["l4lb"] == nil) != (failed["octavia"] == nil) {
			t.Errorf("%s:\n  l4lb: %v %s\n  octavia: %v %s", call, failed["l4lb"], got["l4lb"], failed["octavia"], got["octavia"])
			differences++
			continue
		}
		if failed["l4lb"] != nil {
			continue // both refuse
		}
		switch s.kind {
		case "show":
			var a, o map[string]any
			if json.Unmarshal([]byte(got["l4lb"]), &a) != nil || json.Unmarshal([]byte(got["octavia"]), &o) != nil {
				t.Errorf("%s: not JSON:\n  l4lb: %s\n  octavia: %s", call, got["l4lb"], got["octavia"])
				differences++
				continue
			}
			for _, d := range compareFields("", a, o, own) {
				t.Errorf("%s: %s", call, d)
				differences++
			}
		case "columns":
			var a, o []map[string]any
			if json.Unmarshal([]byte(got["l4lb"]), &a) != nil || json.Unmarshal([]byte(got["octavia"]), &o) != nil || len(a) == 0 || len(o) == 0 {
				t.Errorf("%s:\n  l4lb: %s\n  octavia: %s", call, got["l4lb"], got["octavia"])
				differences++
				continue
			}
			if ka, ko := slices.Sorted(maps.Keys(a[0])), slices.Sorted(maps.Keys(o[0])); !slices.Equal(ka, ko) {
				t.Errorf("%s: columns %v (l4lb), %v (octavia)", call, ka, ko)
				differences++
			}
		case "list":
			if got["l4lb"] != got["octavia"] {
				t.Errorf("%s:\n  l4lb:\n%s\n  octavia:\n%s", call, got["l4lb"], got["octavia"])
				differences++
			}
		}
	}
	t.Logf("%d calls compared, %d differences", len(steps), differences)
}

// compareFields lists how a (l4lb's) and o (Octavia's) differ: a field in one only, at any
// depth, or a value that differs in a field not in own; objects and lists of objects (the
// status tree) are compared field by field.
func compareFields(at string, a, o map[string]any, own map[string]bool) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(union(a, o))) {
		av, inA := a[k]
		ov, inO := o[k]
		path := strings.TrimPrefix(at+"."+k, ".")
		if inA != inO {
			out = append(out, fmt.Sprintf("field %s only in %s", path, map[bool]string{true: "l4lb", false: "octavia"}[inA]))
			continue
		}
		am, aIsMap := av.(map[string]any)
		om, oIsMap := ov.(map[string]any)
		al, aIsList := av.([]any)
		ol, oIsList := ov.([]any)
		switch {
		case aIsMap && oIsMap:
			out = append(out, compareFields(path, am, om, own)...)
		case aIsList && oIsList && len(al) == len(ol) && len(al) > 0 && isObject(al[0]) && isObject(ol[0]):
			for i := range al {
				am, _ := al[i].(map[string]any)
				om, _ := ol[i].(map[string]any)
				out = append(out, compareFields(fmt.Sprintf("%s[%d]", path, i), am, om, own)...)
			}
		case !own[k] && fmt.Sprint(av) != fmt.Sprint(ov):
			out = append(out, fmt.Sprintf("%s is %v (l4lb), %v (octavia)", path, av, ov))
		}
	}
	return out
}

func isObject(v any) bool { _, ok := v.(map[string]any); return ok }

func union(a, b map[string]any) map[string]any {
	u := maps.Clone(a)
	maps.Copy(u, b)
	return u
}
