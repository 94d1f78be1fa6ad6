#!/usr/bin/env bash
# make bench: l4lb against HAProxy 2.6 (what Octavia's amphorae run) and a direct connection,
# side by side on loopback in one run, printed as ratios. Same threads (2) and timeouts for
# both proxies. Figures on shared 2-core machines are noisy: compare ratios from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
# shellcheck source=hack/lib/bench.sh
source hack/lib/bench.sh
DUR=${DUR:-5}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# A proxy holds two descriptors per connection: root may raise the limit (the default hard
# limit here is 20 000), anyone else gets what the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NIDLE=${NIDLE:-10000}

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go build -o "$work/l4lb" . && go build -o "$work/bench" ./hack/bench

# Back-ends: an HTTP server and an iperf3 server.
"$work/bench" http-server 127.0.0.1:18080 & pids+=($!)
"$work/bench" udp-echo 127.0.0.1:17000 & pids+=($!)
"$work/bench" udp-relay 127.0.0.1:17001 127.0.0.1:17000 & relay_pid=$!; pids+=($relay_pid)
iperf3 -s -B 127.0.0.1 -p 15201 >/dev/null 2>&1 & pids+=($!)
# iperf3 3.12 runs all its streams in one thread, and a server takes one test at a time: eight
# streams from eight processes need eight servers (ports 15211-15218), and as many listeners.
for i in {1..8}; do iperf3 -s -B 127.0.0.1 -p "1521$i" >/dev/null 2>&1 & pids+=($!); done
"$work/bench" sink 127.0.0.1:16000 & pids+=($!)

# served NAME PROTOCOL PORT POOL-PROTOCOL MEMBER-PORT [LISTENER-FIELDS]: a listener on the VIP
# and its pool of one member on loopback.
served() {
  cat <<YAML
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Listener
metadata: {name: $1}
spec: {loadBalancerRef: {name: bench}, protocol: $2, protocolPort: $3${6:+, $6}}
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Pool
metadata: {name: $1}
spec: {listenerRef: {name: $1}, protocol: $4, lbAlgorithm: ROUND_ROBIN, members: [{name: a, address: 127.0.0.1, protocolPort: $5}]}
YAML
}
{
  cat <<YAML
apiVersion: lb.l4lb.io/v1alpha1
kind: LoadBalancer
metadata: {name: bench}
spec: {provider: static, vip: {address: 127.0.0.1}}
YAML
  served http TCP 28080 TCP 18080
  served bulk TCP 25201 TCP 15201
  for i in {1..8}; do served "bulk$i" TCP "2521$i" TCP "1521$i"; done
  served udp UDP 17002 UDP 17000
  # D8: the same bulk transfer through a plain pool and through a PROXYV2 pool with every
  # timeout set (metrics are always on).
  served plain TCP 26000 TCP 16000
  served proxied TCP 26001 PROXYV2 16000 "timeoutClientData: 30s, timeoutMemberData: 30s, timeoutMemberConnect: 2s, timeoutTCPInspect: 1s"
} >"$work/l4lb.yaml"
# This l4lb proxies TCP and UDP itself (--kernel-tcp=false --kernel-udp=false): the kernel
# path's NAT chains would turn conntrack on for every connection of the TCP scenarios, direct
# and HAProxy included. The kernel path gets an l4lb of its own, with the defaults, below.
GOMAXPROCS=2 "$work/l4lb" dataplane --config "$work/l4lb.yaml" --kernel-tcp=false --kernel-udp=false --metrics-bind-address 0 2>"$work/l4lb.log" & l4lb_pid=$!; pids+=($l4lb_pid)

{
  haproxy_common
  cat <<CFG
frontend http
  bind 127.0.0.1:38080
  default_backend http
backend http
  balance roundrobin
  server a 127.0.0.1:18080
frontend bulk
  bind 127.0.0.1:35201
  default_backend bulk
backend bulk
  server a 127.0.0.1:15201
$(for i in {1..8}; do printf 'frontend bulk%s\n  bind 127.0.0.1:3521%s\n  default_backend bulk%s\nbackend bulk%s\n  server a 127.0.0.1:1521%s\n' "$i" "$i" "$i" "$i" "$i"; done)
CFG
} >"$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & haproxy_pid=$!; pids+=($haproxy_pid)
sleep 1

declare -A port_http=([direct]=18080 [l4lb]=28080 [haproxy]=38080)
declare -A port_bulk=([direct]=15201 [l4lb]=25201 [haproxy]=35201)
declare -A pid_of=([l4lb]=$l4lb_pid [haproxy]=$haproxy_pid)
paths=(direct l4lb haproxy)

iperf() { # port streams -> Gbit/s
  iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t "$DUR" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
iperf8() { # port-base -> Gbit/s of eight single-stream iperf3 processes to ports base+1..8
  local i clients=()
  for i in {1..8}; do iperf3 -c 127.0.0.1 -p $(($1 + i)) -t "$DUR" -J >"$work/iperf.$i" 2>/dev/null & clients+=($!); done
  wait "${clients[@]}"
  python3 -c 'import json,sys; print("%.1f" % (sum(json.load(open(f))["end"]["sum_received"]["bits_per_second"] for f in sys.argv[1:])/1e9))' "$work"/iperf.{1..8}
}
wrkrun() { # concurrency port extra-args -> "rps p50ms p99ms"
  local c=$1; shift
  wrk -t2 -c"$c" -d"${DUR}s" --latency "$@" 2>/dev/null | wrk_summary
}

# Each scenario runs ROUNDS times, the paths taking turns, and the median is reported: one
# run on a shared machine is too noisy to compare two proxies by.
ROUNDS=${ROUNDS:-3}
declare -A r
add() { r[$1]="${r[$1]:-} $2"; }
for _ in $(seq "$ROUNDS"); do
  for p in "${paths[@]}"; do add "bulk1_$p" "$(iperf "${port_bulk[$p]}" 1)"; done
  for p in "${paths[@]}"; do add "bulk8_$p" "$(iperf "${port_bulk[$p]}" 8)"; done
  for p in "${paths[@]}"; do add "bulk8p_$p" "$(iperf8 $((${port_bulk[$p]} + 9)))"; done
  # D2 asks for 16 to 256 concurrent connections: 64 is the headline, 16 and 256 the ends.
  for conc in 16 64 256; do
    for p in "${paths[@]}"; do
      read -r a b c <<<"$(wrkrun "$conc" -H 'Connection: close' "http://127.0.0.1:${port_http[$p]}/")"
      add "cps${conc}_$p" "$a"; add "cps${conc}p50_$p" "$b"; add "cps${conc}p99_$p" "$c"
    done
  done
  for p in "${paths[@]}"; do
    read -r a b c <<<"$(wrkrun 64 "http://127.0.0.1:${port_http[$p]}/")"
    add "ka_$p" "$a"; add "ka50_$p" "$b"; add "ka99_$p" "$c"
  done
done
for _ in $(seq "$ROUNDS"); do
  add d8_plain "$("$work/bench" blast 127.0.0.1:26000 "$DUR")"
  add d8_proxied "$("$work/bench" blast 127.0.0.1:26001 "$DUR")"
done
for k in "${!r[@]}"; do
  r[$k]=$(median ${r[$k]})
done
# Memory for $NIDLE idle connections through each proxy.
for p in l4lb haproxy; do
  before=$("$work/bench" rss "${pid_of[$p]}")
  coproc IDLE { "$work/bench" idle "$NIDLE" "127.0.0.1:${port_http[$p]}"; }
  read -r _ _ <&"${IDLE[0]}"
  sleep 1
  after=$("$work/bench" rss "${pid_of[$p]}")
  r[mem_$p]=$(( (after - before) * 1024 / NIDLE ))
  eval "exec ${IDLE[1]}>&-"
  wait "$IDLE_PID" 2>/dev/null || true
  sleep 1
done

# UDP through l4lb (the kernel path, and its proxy) against the naive Go relay (D5), 1, 100 and
# 1000 flows, 64 and 1400 bytes, with the CPU time the whole machine spent per echo (client and
# echo server included, since the kernel path runs in the kernel on their behalf; from
# /proc/stat, in clock ticks of 10 ms).
# As root, l4lb with its defaults hands UDP listeners to the kernel (nftables NAT and
# conntrack, as Octavia hands UDP to LVS). TCP through the kernel path is hack/bench-kernel.sh's,
# on network-namespace hosts: on loopback a client's reused ports meet the member's TIME_WAIT
# sockets through the translation, a case no real network has.
{
  sed -n '1,/^---$/p' "$work/l4lb.yaml" | sed '$d'
  served udp UDP 17003 UDP 17000
} >"$work/l4lb-udp.yaml"
GOMAXPROCS=2 "$work/l4lb" dataplane --config "$work/l4lb-udp.yaml" --metrics-bind-address 0 2>"$work/l4lb-udp.log" & pids+=($!)
sleep 1
udprun() { # key port
  local t0 rate
  t0=$(busy)
  rate=$("$work/bench" udp-load "127.0.0.1:$2" "$flows" "$size" "$DUR")
  add "udp_$1_${flows}_$size" "$rate"
  add "udpcpu_$1_${flows}_$size" "$(python3 -c "print(($(busy) - $t0) * 10000 / ($rate * $DUR))")"
}
for _ in $(seq "$ROUNDS"); do
  for flows in 1 100 1000; do
    for size in 64 1400; do
      udprun naive 17001
      udprun l4lb 17003
      udprun proxy 17002
    done
  done
done
for k in "${!r[@]}"; do
  [[ $k == udp* ]] && r[$k]=$(median ${r[$k]})
done

# What the figures depend on besides the proxies: the kernel, and the congestion control every
# socket gets unless it asks for another (l4lb asks cubic for its member side).
cat <<TABLE
Host: Linux $(uname -r), $(nproc) cores, TCP congestion control $(sysctl -n net.ipv4.tcp_congestion_control) (l4lb's member side: cubic).

| scenario | direct | l4lb | HAProxy 2.6 | l4lb / HAProxy | l4lb / direct |
|---|---|---|---|---|---|
| bulk TCP, 1 stream (Gbit/s) | ${r[bulk1_direct]} | ${r[bulk1_l4lb]} | ${r[bulk1_haproxy]} | $(ratio ${r[bulk1_l4lb]} ${r[bulk1_haproxy]}) | $(ratio ${r[bulk1_l4lb]} ${r[bulk1_direct]}) |
| bulk TCP, 8 streams (Gbit/s) | ${r[bulk8_direct]} | ${r[bulk8_l4lb]} | ${r[bulk8_haproxy]} | $(ratio ${r[bulk8_l4lb]} ${r[bulk8_haproxy]}) | $(ratio ${r[bulk8_l4lb]} ${r[bulk8_direct]}) |
| bulk TCP, 8 streams from 8 processes (Gbit/s) | ${r[bulk8p_direct]} | ${r[bulk8p_l4lb]} | ${r[bulk8p_haproxy]} | $(ratio ${r[bulk8p_l4lb]} ${r[bulk8p_haproxy]}) | $(ratio ${r[bulk8p_l4lb]} ${r[bulk8p_direct]}) |
$(for conc in 64 16 256; do
  k=cps$conc
  echo "| short connections (req/s, $conc concurrent) | ${r[${k}_direct]} | ${r[${k}_l4lb]} | ${r[${k}_haproxy]} | $(ratio ${r[${k}_l4lb]} ${r[${k}_haproxy]}) | $(ratio ${r[${k}_l4lb]} ${r[${k}_direct]}) |"
  echo "| short connections p50 (ms, $conc concurrent) | ${r[${k}p50_direct]} | ${r[${k}p50_l4lb]} | ${r[${k}p50_haproxy]} | $(ratio ${r[${k}p50_l4lb]} ${r[${k}p50_haproxy]}) | |"
  echo "| short connections p99 (ms, $conc concurrent) | ${r[${k}p99_direct]} | ${r[${k}p99_l4lb]} | ${r[${k}p99_haproxy]} | $(ratio ${r[${k}p99_l4lb]} ${r[${k}p99_haproxy]}) | |"
done)
| keep-alive requests (req/s) | ${r[ka_direct]} | ${r[ka_l4lb]} | ${r[ka_haproxy]} | $(ratio ${r[ka_l4lb]} ${r[ka_haproxy]}) | $(ratio ${r[ka_l4lb]} ${r[ka_direct]}) |
| memory per idle connection (bytes, $NIDLE held) | | ${r[mem_l4lb]} | ${r[mem_haproxy]} | $(ratio ${r[mem_l4lb]} ${r[mem_haproxy]}) | |
TABLE
echo
echo "| 128 KiB writes, 1 stream (Gbit/s) | plain pool | PROXYV2 pool, all four timeouts | ratio |"
echo "|---|---|---|---|"
echo "| l4lb | ${r[d8_plain]} | ${r[d8_proxied]} | $(ratio ${r[d8_proxied]} ${r[d8_plain]}) |"
echo
grep -q 'every listener goes through the proxy' "$work/l4lb-udp.log" && echo "(not root: nftables could not be programmed, so the kernel-path columns are l4lb's proxy too)"
echo "| UDP, echoes/s | naive Go relay | l4lb (kernel path) | l4lb / naive | l4lb's proxy (--kernel-udp=false) | proxy / naive | machine CPU µs per echo: naive | l4lb | proxy |"
echo "|---|---|---|---|---|---|---|---|---|"
for flows in 1 100 1000; do
  for size in 64 1400; do
    k=${flows}_$size
    echo "| $flows flows, $size B | ${r[udp_naive_$k]} | ${r[udp_l4lb_$k]} | $(ratio ${r[udp_l4lb_$k]} ${r[udp_naive_$k]}) | ${r[udp_proxy_$k]} | $(ratio ${r[udp_proxy_$k]} ${r[udp_naive_$k]}) | ${r[udpcpu_naive_$k]} | ${r[udpcpu_l4lb_$k]} | ${r[udpcpu_proxy_$k]} |"
  done
done
