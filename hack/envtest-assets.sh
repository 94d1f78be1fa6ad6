#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from the Go module proxy, for envtest and the local
# control plane. Prebuilt envtest binaries cannot be downloaded here, so we build them once,
# at the Kubernetes version matching go.mod's k8s.io libraries, and cache them outside the
# checkout keyed by version. Prints the folder to use as KUBEBUILDER_ASSETS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
minor=$(awk '$1=="k8s.io/api"{print $2}' "$root/go.mod" | sed 's/^v0\.//')   # 37.2
k8s_version="v1.${minor}"
etcd_version="${ETCD_VERSION:-v3.6.16}"
cache="${L4LB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/l4lb}"
out="$cache/envtest/k8s-${k8s_version}-etcd-${etcd_version}"

if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"; exit 0
fi
mkdir -p "$out"
# Two callers at once (a test run beside make test) wait for one build instead of racing.
exec 9>"$out.lock"
flock 9
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

if [[ ! -x "$out/kube-apiserver" ]]; then
  # shellcheck source=hack/lib/k8s-build.sh
  source "$root/hack/lib/k8s-build.sh"
  k8s_build "$k8s_version" "$minor" "$out" kube-apiserver
fi

if [[ ! -x "$out/etcd" ]]; then
  echo "building etcd ${etcd_version}..." >&2
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  go mod init l4lb.local/etcd >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@${etcd_version}" >&2
  go mod tidy >&2
  go build -trimpath -ldflags=-s -o "$out/etcd.tmp" . >&2
  mv "$out/etcd.tmp" "$out/etcd"
fi
echo "$out"
