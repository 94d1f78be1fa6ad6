//go:build conformance

package octavia_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestOctaviaTempest runs Octavia's own API test suite (octavia-tempest-plugin, Debian's
// package, unchanged) against l4lb's Octavia API registered in the real Keystone's catalog,
// with its network tests on (test_with_noop = false: each test class makes real Neutron
// networks and subnets, and the controller real VIP ports on them) and a dataplane agent
// holding the VIPs in a network namespace, so statuses reach ACTIVE and ONLINE as they do on a
// cloud. Layer 7 and TLS are switched off in the suite's own feature flags, as docs/octavia-api.md
// declares them unsupported. `make conformance` runs it; it fails on any failed test.
//
// L4LB_TEMPEST_REGEX and L4LB_TEMPEST_EXCLUDE choose other tests (tempest's --regex and
// --exclude-regex); the default is the layer-4 API tests.
func TestOctaviaTempest(t *testing.T) {
	defer catch(t)
	for _, tool := range []string{"tempest", "openstack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: make conformance installs octavia-tempest-plugin (Debian)", tool)
		}
	}
	_, env, dir := cloudLab(t)
	netShow := exec.Command("openstack", "network", "show", "public-net", "-f", "value", "-c", "id")
	netShow.Env = env
	public, err := netShow.Output()
	if err != nil {
		t.Fatalf("openstack network show public-net: %v", err)
	}

	work := filepath.Join(dir, "tempest")
	run := func(in string, args ...string) (string, error) {
		cmd := exec.Command("tempest", args...)
		cmd.Dir, cmd.Env = in, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Tempest keeps a registry of workspaces by name (~/.tempest): one of this run's own,
	// removed after it.
	name := fmt.Sprintf("l4lb-%d", os.Getpid())
	if out, err := run(dir, "init", "--name", name, work); err != nil {
		t.Fatalf("tempest init: %v\n%s", err, out)
	}
	t.Cleanup(func() { run(dir, "workspace", "remove", "--name", name) })
	conf := fmt.Sprintf(tempestConf, filepath.Join(dir, "tempest.log"), strings.TrimSpace(string(public)))
	mustDo(os.WriteFile(filepath.Join(work, "etc", "tempest.conf"), []byte(conf), 0o600))

	regex, exclude := os.Getenv("L4LB_TEMPEST_REGEX"), os.Getenv("L4LB_TEMPEST_EXCLUDE")
	if regex == "" {
		regex = layer4Tests
	}
	if exclude == "" {
		exclude = layer7Tests
	}
	out, runErr := run(work, "run", "--regex", regex, "--exclude-regex", exclude, "--concurrency", "2")
	summary := tempestSummary(out)
	t.Logf("octavia-tempest-plugin, %s:\n%s", regex, summary.text)
	if outFile := os.Getenv("L4LB_TEMPEST_OUT"); outFile != "" {
		mustDo(os.WriteFile(outFile, []byte(out), 0o644))
	}
	if summary.ran == 0 {
		t.Fatalf("tempest ran no test (%v):\n%s", runErr, out)
	}
	if summary.failed > 0 {
		t.Fatalf("%d of %d tests failed:\n%s", summary.failed, summary.ran, strings.Join(summary.failures, "\n"))
	}
}

// The layer-4 scope of the API tests: load balancers, listeners, pools, members, health
// monitors, providers, amphorae; of those, the tests of HTTP, HTTPS, TLS and TERMINATED_HTTPS
// listeners, pools and monitors are layer 7, which l4lb refuses (docs/octavia-api.md).
const (
	layer4Tests = `^octavia_tempest_plugin\.tests\.api\.v2\.test_(load_balancer|listener|pool|member|healthmonitor|provider|amphora)\.`
	layer7Tests = `(?i)\.test_(\w+_)?(https?|tls|terminated_https)_`
)

// The suite's configuration: Keystone's administrator for its dynamic credentials (a project
// and users with Octavia's roles per test class), the live network tests, the statuses polled
// every second, layer 7 and TLS off.
const tempestConf = `[DEFAULT]
log_file = %s
use_stderr = false

[auth]
use_dynamic_credentials = true
admin_username = admin
admin_password = l4lb-admin
admin_project_name = admin
admin_domain_name = Default

[identity]
uri_v3 = http://127.0.0.1:15000/v3
auth_version = v3
region = RegionOne
disable_ssl_certificate_validation = true

[identity-feature-enabled]
api_v2 = false

[service_available]
load_balancer = true
neutron = true
nova = true
glance = true
cinder = false
swift = false

[network]
public_network_id = %s
project_networks_reachable = false

[network-feature-enabled]
port_security = false

[load_balancer]
test_with_noop = false
provider = l4lb
enabled_provider_drivers = l4lb:layer-4 load balancers on Kubernetes (l4lb)
RBAC_test_type = advanced
build_interval = 1
build_timeout = 120
lb_build_interval = 1
lb_build_timeout = 300
check_interval = 1
check_timeout = 60
test_with_ipv6 = true

[loadbalancer-feature-enabled]
l7_protocol_enabled = false
terminated_tls_enabled = false
health_monitor_enabled = true
session_persistence_enabled = true
not_implemented_is_error = true
`

type summary struct {
	ran, passed, skipped, failed int
	failures                     []string
	text                         string
}

var (
	totalsLine  = regexp.MustCompile(`(?m)^\s*-?\s*(Ran|Passed|Skipped|Failed|Expected Fail|Unexpected Success):\s*(\d+)`)
	failureLine = regexp.MustCompile(`\{\d+\}\s+(\S+)\s+\[[^\]]*\]\s+\.\.\.\s+FAILED`)
)

// tempestSummary reads the totals and the failed tests' names from tempest's output.
func tempestSummary(out string) summary {
	var s summary
	var text []string
	for _, m := range totalsLine.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[2])
		switch m[1] {
		case "Ran":
			s.ran = n
		case "Passed":
			s.passed = n
		case "Skipped":
			s.skipped = n
		case "Failed":
			s.failed = n
		}
		text = append(text, m[0])
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := failureLine.FindStringSubmatch(sc.Text()); m != nil {
			s.failures = append(s.failures, m[1])
		}
	}
	s.text = strings.Join(text, "\n")
	return s
}
