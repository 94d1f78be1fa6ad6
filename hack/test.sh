#!/usr/bin/env bash
# Every test, against a real kube-apiserver and etcd (built once by hack/envtest-assets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
export KUBEBUILDER_ASSETS
# -p 1: packages that start an API server or load the network must not share 2 cores at once.
go test -p 1 -count=1 -timeout 30m "$@" ./...
