#!/usr/bin/env bash
# make demo / make demo-down: the seed's walkthrough, for real, on this machine.
# A real kube-apiserver and etcd run on loopback (hack/localcluster), the l4lb controller and
# one dataplane agent run as processes beside them, the seed's Flask app runs as two
# "instances" on 127.0.0.11 and 127.0.0.12 (ports 8080 and 8443), the static samples
# (config/samples/static) are applied, and the seed's "Test the setup" is run against the VIP.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
state=$PWD/.demo
export KUBECONFIG=$state/kubeconfig
VIP=127.0.10.1

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

start() { # name command...
  local name=$1; shift
  nohup "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

up() {
  down
  mkdir -p "$state"
  if [[ $(id -u) != 0 ]]; then
    echo "make demo listens on ports 80 and 443 like the seed and installs python3-flask: run it as root" >&2
    exit 1
  fi
  if ! /usr/bin/python3 -c 'import flask' 2>/dev/null; then
    echo "== installing the seed's backend dependency: python3-flask (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-flask >/dev/null
  fi
  go build -o bin/l4lb . && go build -o bin/localcluster ./hack/localcluster

  echo "== starting the local control plane (kube-apiserver + etcd on loopback; built once, cached)"
  start localcluster bin/localcluster -write-kubeconfig "$KUBECONFIG"
  for _ in $(seq 600); do [[ -s "$KUBECONFIG" ]] && break; sleep 0.5; done
  [[ -s "$KUBECONFIG" ]] || { cat "$state/localcluster.log"; echo "the local control plane did not start"; exit 1; }
  kubectl wait --for condition=established --timeout=60s crd --all >/dev/null
  kubectl create namespace l4lb-system >/dev/null # where the dataplane nodes' Leases live

  echo "== starting the controller and one dataplane agent (node demo-node)"
  # Metrics in plain HTTP, on loopback only, so the lab can curl them; a cluster install serves
  # them over HTTPS to authorised scrapers (the default). One host: the agent gossips on
  # loopback, announces nothing on this machine's LAN, and needs no witness.
  start controller bin/l4lb controller --metrics-bind-address 127.0.0.1:18080 --metrics-secure=false --health-probe-bind-address 127.0.0.1:18081
  start dataplane bin/l4lb dataplane --node-name demo-node --gossip-address 127.0.0.1 --gossip-port 0 --announce-interface none --witness none --metrics-bind-address 127.0.0.1:19100 --metrics-secure=false --health-probe-bind-address 127.0.0.1:19101

  echo "== starting the seed's Flask app: instances 127.0.0.11 and 127.0.0.12, ports 8080 and 8443"
  for ip in 127.0.0.11 127.0.0.12; do
    for port in 8080 8443; do
      start "backend-$ip-$port" /usr/bin/python3 hack/backend/app.py -p "$port" --bind "$ip" --name "instance-${ip##*.}"
    done
  done

  echo "== kubectl apply -f config/samples/static/"
  kubectl apply -f config/samples/static/
  # Wait for Ready, but fail at once, with its log, if a process of the demo died.
  for _ in $(seq 40); do
    for f in "$state"/*.pid; do
      kill -0 "$(cat "$f")" 2>/dev/null && continue
      name=$(basename "$f" .pid)
      echo "FAILED: $name exited; the end of $state/$name.log:" >&2
      tail -n 5 "$state/$name.log" >&2
      exit 1
    done
    kubectl wait --for=condition=Ready l4lb --all --timeout=3s >/dev/null 2>&1 && break
  done
  kubectl wait --for=condition=Ready l4lb --all --timeout=1s >/dev/null
  echo
  kubectl get l4lb
  echo
  echo "== Test the setup (the seed's last step), against the VIP $VIP"
  echo "\$ for i in 1 2 3 4; do curl http://$VIP/; done"
  seen=""
  for i in 1 2 3 4; do
    out=$(curl -sS --max-time 5 "http://$VIP/")
    echo "$out"
    seen+="$out"$'\n'
  done
  [[ $(sort -u <<<"$seen" | grep -c .) == 2 ]] || { echo "FAILED: the answers do not come from both back-ends"; exit 1; }
  echo "\$ curl http://$VIP/health"
  curl -sS --max-time 5 "http://$VIP/health"; echo
  echo "\$ curl http://$VIP:443/   (twice: listener-443 balances too)"
  curl -sS --max-time 5 "http://$VIP:443/"; echo
  curl -sS --max-time 5 "http://$VIP:443/"; echo
  cat <<MSG

The output alternates between both back-ends: the load balancer works.

Look around:  export KUBECONFIG=$KUBECONFIG
              kubectl get l4lb
              kubectl get pool pool-80 -o jsonpath='{.status.members}'
              curl -s 127.0.0.1:19100/metrics | grep l4lb_
Logs:         $state/*.log
Stop it:      make demo-down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down; echo "stopped" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
