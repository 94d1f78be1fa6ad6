#!/usr/bin/env bash
# The field's own suites against l4lb, beyond make test's time: octavia-tempest-plugin
# (Debian's package, unchanged) against l4lb's Octavia API with the real Keystone and Neutron
# of hack/openstack.sh, as root. Prints tempest's totals and fails on any failed test.
#
#   make conformance                       the API tests (octavia_tempest_plugin.tests.api.v2)
#   L4LB_TEMPEST_REGEX='...pool' make conformance     a part of them
#   L4LB_TEMPEST_OUT=file                   also keep tempest's whole output there
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
[[ $(id -u) == 0 ]] || { echo "conformance.sh: needs root (packages, network namespaces, the local cloud)" >&2; exit 1; }
if ! command -v tempest >/dev/null || ! dpkg -s octavia-tempest-plugin >/dev/null 2>&1; then
  echo "conformance.sh: installing tempest and octavia-tempest-plugin (Debian)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends octavia-tempest-plugin >/dev/null
fi
KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS
hack/openstack.sh up >/dev/null
trap 'hack/openstack.sh down >/dev/null 2>&1' EXIT
go test -tags conformance -count=1 -timeout 150m -run '^TestOctaviaTempest$' -v ./internal/octavia/ 2>&1 |
  grep -vE '^time=|octavia API (write|read)'
