#!/usr/bin/env bash
# make demo / make demo-down: the seed's walkthrough on this machine, no cloud needed.
# A real kube-apiserver and etcd run on loopback (hack/localcluster), the CRDs are installed,
# and the static samples (config/samples/static) are applied.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
state=.demo
export KUBECONFIG=$PWD/$state/kubeconfig

down() {
  for f in "$state"/*.pid; do
    [[ -e "$f" ]] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  rm -f "$KUBECONFIG"
}

up() {
  down
  mkdir -p "$state"
  KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
  export KUBEBUILDER_ASSETS
  go build -o bin/localcluster ./hack/localcluster
  echo "== starting the local control plane (kube-apiserver + etcd on loopback)"
  nohup bin/localcluster -write-kubeconfig "$KUBECONFIG" >"$state/localcluster.log" 2>&1 &
  echo $! >"$state/localcluster.pid"
  for _ in $(seq 120); do [[ -s "$KUBECONFIG" ]] && break; sleep 0.5; done
  [[ -s "$KUBECONFIG" ]] || { cat "$state/localcluster.log"; echo "the local control plane did not start"; exit 1; }
  kubectl wait --for condition=established --timeout=60s crd --all >/dev/null

  echo "== applying the seed's walkthrough as objects: kubectl apply -f config/samples/static/"
  kubectl apply -f config/samples/static/
  echo
  echo "== kubectl get l4lb"
  kubectl get l4lb
  cat <<MSG

The objects are stored and validated by a real API server. No controller or dataplane runs yet,
so statuses stay empty and the VIP does not answer.

Try it:   export KUBECONFIG=$KUBECONFIG; kubectl get l4lb; kubectl explain pool.spec.members
Stop it:  make demo-down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down; echo "stopped" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
