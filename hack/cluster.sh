#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the tests that run l4lb as users
# install it: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (built from the Go module proxy at go.mod's Kubernetes version, cached outside the
# checkout), with Debian's containerd, runc and CNI plugins; the whole cluster lives in a network
# namespace of its own, so nothing the dataplane does (VIPs, nftables, ARP) reaches the
# machine's interfaces.
#
#   hack/cluster.sh up      build what is missing, start, wait for the node to be Ready
#   hack/cluster.sh build   only build the Kubernetes commands (make test does it early, in the
#                           background, while the tests before the cluster's run)
#   hack/cluster.sh down    stop every process, unmount, delete the namespace and cgroups
#   hack/cluster.sh load F  import an image archive (make image) into the node's containerd
#   hack/cluster.sh env     print the variables tests use (KUBECONFIG, the namespace, ...)
#
# The node is 198.51.100.2 on eth0 inside namespace l4lb-cluster; the machine reaches it through
# the veth l4lbc0 (198.51.100.1). Pods: 10.244.0.0/24 on the CNI bridge; Services: 10.96.0.0/24.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
minor=$(awk '$1=="k8s.io/api"{print $2}' "$root/go.mod" | sed 's/^v0\.//')
k8s_version="v1.${minor}"
cache="${L4LB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/l4lb}"
bin="$cache/cluster/k8s-${k8s_version}"
state="${L4LB_CLUSTER_DIR:-/tmp/l4lb-cluster}"
ns=l4lb-cluster
node=l4lb-node
node_ip=198.51.100.2
host_ip=198.51.100.1
pod_cidr=10.244.0.0/24
svc_cidr=10.96.0.0/24
pause_image=l4lb.local/pause:3.10
export GOTOOLCHAIN=local

log() { echo "cluster: $*" >&2; }
# nsenter, not ip netns exec: the latter remounts /sys in a mount namespace of its own, which
# hides the cgroup hierarchies from the kubelet.
inns() { nsenter --net="/run/netns/$ns" "$@"; }

deps() {
  local missing=()
  # python3-flask: the e2e tests' member host runs the seed's Flask app.
  for p in containerd runc containernetworking-plugins iptables conntrack socat python3-flask; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# build_k8s builds the Kubernetes commands this cluster needs, once.
build_k8s() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
  local todo=()
  mkdir -p "$bin"
  # kube-apiserver is the one hack/envtest-assets.sh builds for the same version, with the same
  # flags (hack/lib/k8s-build.sh): copied, not built twice (this waits while it is built).
  if [[ ! -x "$bin/kube-apiserver" ]]; then
    cp "$("$root/hack/envtest-assets.sh")/kube-apiserver" "$bin/kube-apiserver"
  fi
  for c in "${want[@]}"; do [[ -x "$bin/$c" ]] || todo+=("$c"); done
  ((${#todo[@]})) || return 0
  exec 8>"$bin.lock"
  flock 8
  # shellcheck source=hack/lib/k8s-build.sh
  source "$root/hack/lib/k8s-build.sh"
  k8s_build "$k8s_version" "$minor" "$bin" "${todo[@]}"
}

pki() {
  local d="$state/pki"
  [[ -f "$d/admin.crt" ]] && return 0
  mkdir -p "$d"
  cd "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=l4lb-cluster-ca" 2>/dev/null
  cat > san.cnf <<EOF
[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:10.96.0.1,IP:${node_ip},IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage = serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile san.cnf -extensions ext 2>/dev/null
  # One client identity for the components (system:masters): this cluster tests l4lb's own
  # service accounts and RBAC, not the components'.
  printf '[ext]\nextendedKeyUsage = clientAuth\n' > client.cnf
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=cluster-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 30 -extfile client.cnf -extensions ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

kubeconfig() { # server file
  cat > "$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: l4lb
  cluster: {server: "$1", certificate-authority: "$state/pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$state/pki/admin.crt", client-key: "$state/pki/admin.key"}
contexts:
- name: l4lb
  context: {cluster: l4lb, user: admin}
current-context: l4lb
EOF
}

network() {
  ip netns add "$ns"
  ip link add l4lbc0 type veth peer name eth0 netns "$ns"
  ip addr add "$host_ip/24" dev l4lbc0
  ip link set l4lbc0 up
  inns ip addr add "$node_ip/24" dev eth0
  inns ip link set eth0 up
  inns ip link set lo up
  inns ip route add default via "$host_ip"
  inns sysctl -qw net.ipv4.ip_forward=1
}

start() { # name command...
  local name=$1; shift
  # The process writes its own PID: setsid forks when it starts a group leader, so $! would
  # be setsid's.
  inns setsid sh -c 'echo $$ > "$0"; exec "$@"' "$state/pids/$name" "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
}

wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > end)); then
      log "timed out waiting for $what"; tail -n 20 "$state"/logs/*.log >&2 || true; return 1
    fi
    sleep 0.5
  done
}

up() {
  if ip netns list | grep -qw "$ns"; then log "already up (hack/cluster.sh down first)"; return 0; fi
  deps
  build_k8s
  local assets; assets=$("$root/hack/envtest-assets.sh")
  mkdir -p "$state"/{logs,pids,etcd,containerd,kubelet,cni,images}
  pki
  kubeconfig "https://${node_ip}:6443" "$state/kubeconfig"
  network

  start etcd "$assets/etcd" --data-dir "$state/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --log-level warn
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --advertise-address "$node_ip" --bind-address 0.0.0.0 --secure-port 6443 \
    --service-cluster-ip-range "$svc_cidr" --allow-privileged=true --authorization-mode Node,RBAC \
    --client-ca-file "$state/pki/ca.crt" --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
    --kubelet-client-certificate "$state/pki/admin.crt" --kubelet-client-key "$state/pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$state/pki/sa.pub" \
    --service-account-signing-key-file "$state/pki/sa.key" --api-audiences https://kubernetes.default.svc
  wait_for "the API server" 60 kubectl --kubeconfig "$state/kubeconfig" get --raw /readyz
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$state/kubeconfig" \
    --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
    --use-service-account-credentials=true --cluster-signing-cert-file "$state/pki/ca.crt" \
    --cluster-signing-key-file "$state/pki/ca.key" --leader-elect=false --bind-address 127.0.0.1
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$state/kubeconfig" --leader-elect=false --bind-address 127.0.0.1

  # containerd: its own state under $state, the local pause image, and no negative OOM scores
  # (root here lacks CAP_SYS_RESOURCE).
  cat > "$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$state/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  cat > "$state/cni/10-l4lb.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "l4lb-pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  start containerd containerd --config "$state/containerd.toml"
  wait_for "containerd" 30 ctr --address "$state/containerd.sock" version
  pause
  cat > "$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$state/pki/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$state/containerd.sock
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  start kubelet "$bin/kubelet" --kubeconfig "$state/kubeconfig" --config "$state/kubelet.yaml" \
    --hostname-override "$node" --node-ip "$node_ip" --root-dir "$state/kubelet"
  cat > "$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$state/kubeconfig"}
mode: iptables
clusterCIDR: "$pod_cidr"
hostnameOverride: "$node"
oomScoreAdj: 0
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  start kube-proxy "$bin/kube-proxy" --config "$state/kube-proxy.yaml"
  wait_for "the node to be Ready" 120 kubectl --kubeconfig "$state/kubeconfig" wait --for=condition=Ready "node/$node" --timeout=2s
  log "up: KUBECONFIG=$state/kubeconfig (node $node, $node_ip, namespace $ns)"
}

# pause builds and imports the pod sandbox image.
pause() {
  local img="$state/images/pause.tar"
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$state/images/pause" ./hack/pause &&
    go run ./hack/image -binary "$state/images/pause" -path /pause -user 65535:65535 -tag "$pause_image" -o "$img")
  load "$img"
}

load() {
  ctr --address "$state/containerd.sock" -n k8s.io images import --no-unpack=false "$1" >&2
}

down() {
  # Every process of the cluster names the state folder on its command line (components,
  # containerd, its shims); the containers' processes are in the kubelet's cgroups.
  pkill -TERM -f -- "$state/" 2>/dev/null || true
  sleep 1
  for _ in 1 2 3 4 5; do
    pkill -KILL -f -- "$state/" 2>/dev/null || true
    for procs in $(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs 2>/dev/null); do
      xargs -r kill -9 < "$procs" 2>/dev/null || true
    done
    pgrep -f -- "$state/" >/dev/null || break
    sleep 0.5
  done
  # Mounts under the state folder (volumes, rootfs, shm), deepest first, until none is left
  # (a mount can be stacked on another).
  for _ in 1 2 3 4 5; do
    mounts=$(awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r)
    [[ -z "$mounts" ]] && break
    for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
    sleep 0.5
  done
  # The kubelet's cgroups, in every v1 hierarchy, deepest first (emptied above).
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h/kubepods" ]] && find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # The pods' network namespaces (containerd names them cni-<id>), then the node's.
  for n in $(ip netns list | awk '/^cni-/{print $1}'); do ip netns del "$n" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  ip link del l4lbc0 2>/dev/null || true
  rm -rf "$state" 2>/dev/null || { sleep 1; rm -rf "$state"; }
}

case "${1:-}" in
  up) up ;;
  build) build_k8s ;;
  down) down ;;
  load) load "$2" ;;
  env) echo "KUBECONFIG=$state/kubeconfig L4LB_CLUSTER_NS=$ns L4LB_CLUSTER_NODE=$node L4LB_CLUSTER_NODE_IP=$node_ip" ;;
  *) echo "usage: $0 up|down|load IMAGE.tar|env" >&2; exit 2 ;;
esac
