//go:build conformance

package octavia_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1 "github.com/l4lb/l4lb/api/v1alpha1"
)

// TestTerraform applies terraform-provider-openstack's load-balancer resources with OpenTofu
// (both built unchanged from the Go module proxy by hack/conformance.sh, paths in L4LB_TOFU
// and L4LB_TF_OPENSTACK_DIR, the provider used through a dev override) against l4lb's Octavia
// API in Keystone's catalog, as a project member: a load balancer on the seed's private
// subnet, a listener, a pool by listener and one by load balancer, members_v2, member_v2
// (with its subnet), a monitor, and, as the cloud's administrator, the project's quota_v2.
// The next plan shows no change; a changed attribute of each is applied in place (no
// replacement), after which the plan is empty again; destroy leaves no l4lb object.
func TestTerraform(t *testing.T) {
	defer catch(t)
	tofu, providerDir := os.Getenv("L4LB_TOFU"), os.Getenv("L4LB_TF_OPENSTACK_DIR")
	if tofu == "" || providerDir == "" {
		t.Fatal("L4LB_TOFU and L4LB_TF_OPENSTACK_DIR are not set: make conformance builds OpenTofu and terraform-provider-openstack and sets them")
	}
	l, env, dir := cloudLab(t)
	subnet := strings.TrimSpace(string(must(openstackCLI(env, "subnet", "show", "private-subnet", "-f", "value", "-c", "id"))))

	// A member of project alpha (Octavia's load-balancer_member role) and the administrator,
	// in one clouds.yaml as users keep them.
	clouds := fmt.Sprintf(`clouds:
  alice:
    auth:
      auth_url: http://127.0.0.1:15000/v3
      username: alice-%d
      password: pw-alice
      user_domain_name: Default
      project_id: %s
    region_name: RegionOne
%s`, os.Getpid(), l.proj["alpha"], strings.TrimPrefix(string(cloudsYAML), "clouds:\n"))
	mustDo(os.WriteFile(filepath.Join(dir, "clouds.yaml"), []byte(clouds), 0o600))
	rc := filepath.Join(dir, "tofurc")
	mustDo(os.WriteFile(rc, []byte(fmt.Sprintf(`provider_installation {
  dev_overrides {
    "terraform-provider-openstack/openstack" = %q
  }
  direct {}
}
`, providerDir)), 0o600))
	work := filepath.Join(dir, "work")
	mustDo(os.MkdirAll(work, 0o755))
	mustDo(os.WriteFile(filepath.Join(work, "main.tf"), []byte(terraformConfig), 0o600))
	env = append(env, "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1",
		"TF_VAR_subnet_id="+subnet, "TF_VAR_project_id="+l.proj["alpha"])
	tf := func(args ...string) (string, int) {
		cmd := exec.Command(tofu, append(args, "-no-color")...)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("tofu %s: %v", args[0], err)
		}
		return string(out), code
	}
	apply := func(vars ...string) {
		if out, code := tf(append([]string{"apply", "-auto-approve"}, vars...)...); code != 0 {
			t.Fatalf("tofu apply %v: exit %d\n%s", vars, code, out)
		}
	}
	// plan's -detailed-exitcode: 0 no change, 2 changes.
	plan := func(want int, vars ...string) string {
		out, code := tf(append([]string{"plan", "-detailed-exitcode"}, vars...)...)
		if code != want {
			t.Fatalf("tofu plan %v: exit %d, want %d\n%s", vars, code, want, out)
		}
		return out
	}
	t.Cleanup(func() { tf("destroy", "-auto-approve") })

	apply()
	var lbs lbv1.LoadBalancerList
	mustDo(l.k8s.List(l.ctx, &lbs))
	if len(lbs.Items) != 1 || lbs.Items[0].Status.ProvisioningStatus != lbv1.ProvisioningActive || lbs.Items[0].Status.VIPSubnetID != subnet {
		t.Fatalf("after apply, l4lb load balancers: %+v", lbs.Items)
	}
	plan(0)

	changed := []string{"-var", "description=changed", "-var", "timeout=20000", "-var", "lb_method=LEAST_CONNECTIONS",
		"-var", "weight=5", "-var", "member_name=renamed", "-var", "delay=7", "-var", "quota=7"}
	out := plan(2, changed...)
	if strings.Contains(out, "must be replaced") || !regexp.MustCompile(`Plan: 0 to add, \d+ to change, 0 to destroy`).MatchString(out) {
		t.Fatalf("a change of each resource's attribute is not planned in place:\n%s", out)
	}
	for _, r := range []string{"loadbalancer_v2.lb", "listener_v2.listener", "pool_v2.by_listener", "pool_v2.by_lb",
		"members_v2.members", "member_v2.member", "monitor_v2.monitor", "quota_v2.quota"} {
		if !strings.Contains(out, "openstack_lb_"+r+" will be updated in-place") {
			t.Fatalf("openstack_lb_%s is not updated in place:\n%s", r, out)
		}
	}
	apply(changed...)
	plan(0, changed...)

	if out, code := tf("destroy", "-auto-approve"); code != 0 {
		t.Fatalf("tofu destroy: exit %d\n%s", code, out)
	}
	for _, list := range []client.ObjectList{&lbv1.LoadBalancerList{}, &lbv1.ListenerList{}, &lbv1.PoolList{}, &lbv1.HealthMonitorList{}} {
		mustDo(l.k8s.List(l.ctx, list))
		if n := len(must(meta.ExtractList(list))); n != 0 {
			t.Fatalf("after destroy: %d %T items left", n, list)
		}
	}
}

func openstackCLI(env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("openstack", args...)
	cmd.Env = env
	return cmd.Output()
}

// terraformConfig is what a user writes for the seed's shape with every load-balancer
// resource of terraform-provider-openstack (layer 4); the variables are what the test
// changes.
const terraformConfig = `
terraform {
  required_providers {
    openstack = { source = "terraform-provider-openstack/openstack" }
  }
}

provider "openstack" {
  cloud = "alice"
}

provider "openstack" {
  alias = "admin"
  cloud = "l4lb-local"
}

variable "subnet_id" {}
variable "project_id" {}
variable "description" { default = "made by tofu" }
variable "timeout" { default = 50000 }
variable "lb_method" { default = "ROUND_ROBIN" }
variable "weight" { default = 1 }
variable "member_name" { default = "third" }
variable "delay" { default = 5 }
variable "quota" { default = 5 }

resource "openstack_lb_loadbalancer_v2" "lb" {
  name          = "tf-lb"
  description   = var.description
  vip_subnet_id = var.subnet_id
  tags          = ["tofu", "seed"]
}

resource "openstack_lb_listener_v2" "listener" {
  name                = "tf-listener"
  protocol            = "TCP"
  protocol_port       = 80
  loadbalancer_id     = openstack_lb_loadbalancer_v2.lb.id
  timeout_client_data = var.timeout
  allowed_cidrs       = ["192.0.2.0/24"]
}

resource "openstack_lb_pool_v2" "by_listener" {
  name        = "tf-pool"
  protocol    = "TCP"
  lb_method   = var.lb_method
  listener_id = openstack_lb_listener_v2.listener.id
}

resource "openstack_lb_pool_v2" "by_lb" {
  name            = "tf-spare-pool"
  protocol        = "UDP"
  lb_method       = "SOURCE_IP"
  loadbalancer_id = openstack_lb_loadbalancer_v2.lb.id
  description     = var.description
}

resource "openstack_lb_members_v2" "members" {
  pool_id = openstack_lb_pool_v2.by_listener.id
  member {
    address       = "192.0.2.10"
    protocol_port = 8080
    weight        = var.weight
  }
  member {
    address       = "192.0.2.11"
    protocol_port = 8080
  }
}

resource "openstack_lb_member_v2" "member" {
  pool_id       = openstack_lb_pool_v2.by_lb.id
  name          = var.member_name
  address       = "192.0.2.12"
  protocol_port = 5353
  subnet_id     = var.subnet_id
  tags          = ["tofu"]
}

resource "openstack_lb_monitor_v2" "monitor" {
  pool_id     = openstack_lb_pool_v2.by_listener.id
  type        = "HTTP"
  url_path    = "/health"
  delay       = var.delay
  timeout     = 3
  max_retries = 3
}

resource "openstack_lb_quota_v2" "quota" {
  provider       = openstack.admin
  project_id     = var.project_id
  loadbalancer   = var.quota
  listener       = 10
  pool           = 10
  health_monitor = 10
}
`
