#!/usr/bin/env bash
# Every test, against a real kube-apiserver and etcd (built once by hack/envtest-assets.sh),
# a real Keystone and Neutron (hack/openstack.sh, as root), real sockets; then the README's
# `make demo`, end to end, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS
if [[ $(id -u) == 0 ]]; then
  # The cluster's Kubernetes commands take about 15 minutes to build on a fresh machine: built
  # now, at the lowest priority, they use what the tests below leave of the CPU (those wait on
  # Keystone, Neutron and timers more than they compute), instead of adding that time after.
  build_log=$(mktemp)
  nice -n 19 hack/cluster.sh build >"$build_log" 2>&1 &
  cluster_build=$!
  # The real Keystone and Neutron, started once for every package that needs them (each
  # would otherwise start and stop its own: test/cloudtest leaves a running cloud up).
  hack/openstack.sh up >/dev/null
  trap 'kill $cluster_build 2>/dev/null; hack/openstack.sh down >/dev/null 2>&1' EXIT
fi
# -p 1: packages that start an API server or load the network must not share 2 cores at once.
# test/e2e runs last, on a real cluster.
go test -p 1 -count=1 -timeout 30m -skip 'TestChurnSoak' "$@" $(go list ./... | grep -v /test/e2e)
# The churn soak (a short run; make soak runs it for minutes) and the engine's concurrency
# under the race detector.
go test -race -count=1 -timeout 10m "$@" ./dataplane/proxy/ ./dataplane/health/

if [[ $(id -u) == 0 ]]; then
  echo "== l4lb installed with Helm on a real single-node cluster (hack/cluster.sh), as pods"
  wait $cluster_build || { cat "$build_log"; echo "building the cluster's commands failed" >&2; exit 1; }
  hack/cluster.sh down >/dev/null 2>&1 || true
  trap 'hack/cluster.sh down >/dev/null 2>&1; hack/openstack.sh down >/dev/null 2>&1' EXIT
  hack/cluster.sh up
  env $(hack/cluster.sh env | sed 's/KUBECONFIG=/L4LB_CLUSTER_KUBECONFIG=/') go test -count=1 -timeout 20m -v "$@" ./test/e2e/ 2>&1 | grep -E '^(=== RUN|--- |    |ok|FAIL|PASS)'
  hack/cluster.sh down
  hack/openstack.sh down >/dev/null 2>&1
  trap - EXIT

  echo "== make demo (the README's first command), then make demo-down"
  trap 'hack/demo.sh down >/dev/null' EXIT
  hack/demo.sh up
  echo "make demo: OK"
else
  echo "skipping make demo: it listens on ports 80 and 443 and installs python3-flask, so it needs root"
fi
