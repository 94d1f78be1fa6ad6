#!/usr/bin/env bash
# The field's own clients and suites against l4lb, beyond make test's time, as root, with the
# real Keystone and Neutron of hack/openstack.sh:
#   tempest  octavia-tempest-plugin (Debian's package, unchanged) against l4lb's Octavia API;
#            prints tempest's totals and fails on any failed test.
#   terraform  OpenTofu with terraform-provider-openstack (both built unchanged from the Go
#            module proxy) applying, changing and destroying every layer-4 openstack_lb_*
#            resource through l4lb's Octavia API.
#   occm     cloud-provider-openstack's controller manager (built unchanged from the Go module
#            proxy) serving Services of type LoadBalancer on the project's cluster
#            (hack/cluster.sh) through l4lb's Octavia API.
#   reference  the openstack CLI's calls against l4lb and against the real Octavia (Debian's
#            packages, no-op drivers: hack/octavia-reference.sh), outputs compared field by
#            field.
#
#   make conformance                       all of them
#   hack/conformance.sh occm               one
#   L4LB_TEMPEST_REGEX='...pool' hack/conformance.sh tempest     a part of the suite
#   L4LB_TEMPEST_OUT=file                   also keep tempest's whole output there
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
[[ $(id -u) == 0 ]] || { echo "conformance.sh: needs root (packages, network namespaces, the local cloud)" >&2; exit 1; }
root=$(pwd)
cache="${L4LB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/l4lb}/clients"
OCCM_VERSION=v1.34.1
TOFU_VERSION=v1.10.6
TF_OPENSTACK_VERSION=v3.4.0
runs=("$@")
((${#runs[@]})) || runs=(tempest terraform occm reference)

# build MODULE VERSION PACKAGE NAME: a command of a released module, built unchanged inside
# the module's own directory (its go.mod and go.sum, as its release was built), once, as
# NAME in a directory of its own; prints the binary's path.
build() {
  local module=$1 version=$2 pkg=$3 out="$cache/$4-$2/$4"
  if [[ ! -x $out ]]; then
    echo "conformance.sh: building $module@$version ($pkg), about 10 minutes once" >&2
    mkdir -p "$(dirname "$out")"
    local dir
    dir=$(cd / && go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    (cd "$dir" && go build -trimpath -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

run_tempest() {
  if ! command -v tempest >/dev/null || ! dpkg -s octavia-tempest-plugin >/dev/null 2>&1; then
    echo "conformance.sh: installing tempest and octavia-tempest-plugin (Debian)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends octavia-tempest-plugin >/dev/null
  fi
  go test -tags conformance -count=1 -timeout 150m -run '^TestOctaviaTempest$' -v ./internal/octavia/ 2>&1 |
    grep -vE '^time=|octavia API (write|read)'
}

run_terraform() {
  L4LB_TOFU=$(build github.com/opentofu/opentofu "$TOFU_VERSION" ./cmd/tofu tofu)
  L4LB_TF_OPENSTACK_DIR=$(dirname "$(build github.com/terraform-provider-openstack/terraform-provider-openstack/v3 "$TF_OPENSTACK_VERSION" . terraform-provider-openstack)")
  export L4LB_TOFU L4LB_TF_OPENSTACK_DIR
  go test -tags conformance -count=1 -timeout 30m -run '^TestTerraform$' -v ./internal/octavia/ 2>&1 |
    grep -vE '^time=|octavia API (write|read)'
}

run_occm() {
  L4LB_OCCM=$(build k8s.io/cloud-provider-openstack "$OCCM_VERSION" ./cmd/openstack-cloud-controller-manager occm)
  export L4LB_OCCM
  hack/cluster.sh down >/dev/null 2>&1 || true
  hack/cluster.sh up
  env $(hack/cluster.sh env | sed 's/KUBECONFIG=/L4LB_CLUSTER_KUBECONFIG=/') \
    go test -tags conformance -count=1 -timeout 30m -run '^TestCloudProviderOpenStack$' -v ./test/e2e/ 2>&1 |
    grep -E '^(=== RUN|--- |    |ok|FAIL|PASS)'
  hack/cluster.sh down
}

run_reference() {
  hack/octavia-reference.sh up
  go test -tags conformance -count=1 -timeout 30m -run '^TestCLIOutputsAsOctavias$' -v ./internal/octavia/ 2>&1 |
    grep -vE '^time=|octavia API (write|read)'
  hack/octavia-reference.sh down
}

KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS
hack/openstack.sh up >/dev/null
trap 'hack/cluster.sh down >/dev/null 2>&1; hack/octavia-reference.sh down >/dev/null 2>&1; hack/openstack.sh down >/dev/null 2>&1' EXIT
for r in "${runs[@]}"; do
  case $r in
  tempest | terraform | occm | reference) ;;
  *) echo "conformance.sh: no run named $r (tempest, terraform, occm, reference)" >&2; exit 2 ;;
  esac
  echo "== conformance: $r"
  cd "$root"
  "run_$r"
done
