#!/usr/bin/env bash
# Every test, against a real kube-apiserver and etcd (built once by hack/envtest-assets.sh),
# a real Keystone and Neutron (hack/openstack.sh, as root), real sockets; then the README's
# `make demo`, end to end, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
# On a fresh machine much of this script's time is building (docs/benchmarks.md, "CI time"):
# the kube-apiserver and etcd of envtest, Helm, the cluster's Kubernetes commands. They build
# in the background while the tests that need none of them run (they wait on sockets, Keystone and
# Neutron more than they compute); the tests that need an API server run once it is built.
# Niced, so the tests running meanwhile get the CPU when they want it (some count time).
assets_log=$(mktemp)
(exec nice -n 10 bash -c 'hack/envtest-assets.sh && make -s helm') >"$assets_log" 2>&1 &
assets=$!
trap 'kill $assets 2>/dev/null' EXIT
if [[ $(id -u) == 0 ]]; then
  # The cluster's commands are not needed before the end: at the lowest priority they use only
  # what the tests leave of the CPU. They share envtest's kube-apiserver, and wait for it: the
  # head start lets the build above take its lock first.
  build_log=$(mktemp)
  # Then the Gateway API suite's back-ends (CoreDNS compiles for minutes the first time): the
  # test that builds them needs no cluster; test/e2e runs it again, from the cache, and fails
  # there if it failed here.
  (sleep 5; renice -n 19 $BASHPID >/dev/null; hack/cluster.sh build &&
    { go test -count=1 -run '^TestGatewayAPISuiteBackendsBuild$' ./test/e2e/ || true; }) >"$build_log" 2>&1 &
  cluster_build=$!
  # The real Keystone and Neutron, started once for every package that needs them (each
  # would otherwise start and stop its own: test/cloudtest leaves a running cloud up).
  hack/openstack.sh up >/dev/null
  trap 'kill $cluster_build $assets 2>/dev/null; hack/openstack.sh down >/dev/null 2>&1' EXIT
fi

# Which tests need an API server: those in files importing test/testenv or envtest (all of a
# package's, when such a file holds helpers rather than tests, or a TestMain). A package with
# none runs first; a package with some runs its other tests first (the OpenStack provider's,
# which need only the cloud) and those last. A test misplaced by this rule still runs:
# test/testenv waits for the build (hack/envtest-assets.sh holds a lock while it builds).
first=() last=() split=()
for pkg in $(go list ./... | grep -v /test/e2e); do
  dir=.${pkg#github.com/l4lb/l4lb}
  tests=("$dir"/*_test.go)
  [[ -e ${tests[0]} ]] || continue
  env=$(grep -l -E '"(github.com/l4lb/l4lb/test/testenv|sigs.k8s.io/controller-runtime/pkg/envtest)"' "${tests[@]}" || true)
  names=$(grep -ho '^func Test[A-Za-z0-9_]*' $env /dev/null | cut -c6- | paste -sd'|' || true)
  if [[ -z $env ]]; then
    first+=("$pkg")
  elif [[ -n $names && ! $names =~ (^|\|)TestMain($|\|) && $(wc -w <<<"$env") -lt ${#tests[@]} ]]; then
    split+=("$pkg" "$names")
  else
    last+=("$pkg")
  fi
done

# -p 1: packages that start an API server or load the network must not share 2 cores at once
# (but for the cloud's, below). test/e2e runs last, on a real cluster. A failing package does
# not stop the run: every test runs, so one run shows every failure; the script fails at its end.
failed=()
gotest() { go test -p 1 -count=1 -timeout 30m "$@" || failed+=("go test (its FAIL lines above)"); }
gotest -skip TestChurnSoak "$@" "${first[@]}"
# The churn soak (a short run; make soak runs it for minutes) and the engine's concurrency
# under the race detector.
CGO_ENABLED=1 go test -race -count=1 -timeout 10m "$@" ./dataplane/proxy/ ./dataplane/health/ || failed+=(race)
for ((i = 0; i < ${#split[@]}; i += 2)); do
  gotest -skip "^(${split[i+1]})\$" "$@" "${split[i]}"
done
wait $assets || { cat "$assets_log"; echo "building kube-apiserver, etcd or Helm failed" >&2; exit 1; }
KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS
# Those that use the cloud (Keystone and Neutron, which they stop and pause) run one package
# at a time, at low priority, beside those that do not: the failover tests, which count time,
# get the CPU they ask for; the cloud's tests mostly wait on it.
usescloud() { grep -q '"github.com/l4lb/l4lb/test/cloudtest"' ".${1#github.com/l4lb/l4lb}"/*_test.go; }
cloud_log=$(mktemp)
(
  renice -n 10 $BASHPID >/dev/null
  failed=()
  for ((i = 0; i < ${#split[@]}; i += 2)); do
    if usescloud "${split[i]}"; then gotest -run "^(${split[i+1]})\$" "$@" "${split[i]}"; fi
  done
  for pkg in "${last[@]}"; do
    if usescloud "$pkg"; then gotest "$@" "$pkg"; fi
  done
  ((${#failed[@]} == 0))
) >"$cloud_log" 2>&1 &
cloud_tests=$!
for ((i = 0; i < ${#split[@]}; i += 2)); do
  if ! usescloud "${split[i]}"; then gotest -run "^(${split[i+1]})\$" "$@" "${split[i]}"; fi
done
local_last=()
for pkg in "${last[@]}"; do
  usescloud "$pkg" || local_last+=("$pkg")
done
gotest -skip TestSplitBrainSoak "$@" "${local_last[@]}"
wait $cloud_tests || failed+=("go test of the cloud's packages (their FAIL lines below)")
cat "$cloud_log"

if [[ $(id -u) == 0 ]]; then
  echo "== l4lb installed with Helm on a real single-node cluster (hack/cluster.sh), as pods"
  wait $cluster_build || { cat "$build_log"; echo "building the cluster's commands failed" >&2; exit 1; }
  hack/cluster.sh down >/dev/null 2>&1 || true
  trap 'hack/cluster.sh down >/dev/null 2>&1; hack/openstack.sh down >/dev/null 2>&1' EXIT
  hack/cluster.sh up
  env $(hack/cluster.sh env | sed 's/KUBECONFIG=/L4LB_CLUSTER_KUBECONFIG=/') go test -count=1 -timeout 20m -v "$@" ./test/e2e/ 2>&1 | grep -E '^(=== RUN|--- |    |ok|FAIL|PASS)' || failed+=(test/e2e)
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
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
