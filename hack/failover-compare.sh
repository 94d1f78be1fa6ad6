#!/usr/bin/env bash
# l4lb's VIP failover against keepalived VRRP with Octavia's settings, on the same kind of
# hosts (network namespaces on one bridged LAN), from one run. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
command -v keepalived >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends keepalived >/dev/null; }
KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS L4LB_COMPARE_KEEPALIVED=1
go test -count=1 -v -run 'TestVIPFailover|TestKeepalivedFailover' ./dataplane/failover | grep -E '^failover gap|^--- |^(ok|FAIL)'
