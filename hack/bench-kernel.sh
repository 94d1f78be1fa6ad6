#!/usr/bin/env bash
# make bench, the kernel path: TCP through l4lb's kernel path (its defaults) against a direct
# path, l4lb's proxy (--kernel-tcp=false), HAProxy 2.6 and the ceiling of a BPF translation
# (bench bpf-nat: what choosing nftables is measured against), on network-namespace hosts as a
# network has them: a client host, a node holding the VIP (forwarding, as Kubernetes nodes
# do) and a member host, each its own namespace, joined by veth pairs; the direct path is the
# client to the member through the node, routed. Every path but the BPF ceiling crosses the
# node's netfilter, so conntrack is on for them; the BPF ceiling passes it by, as Cilium's
# and Katran's do. Printed as ratios from one run, with the CPU the whole machine spent per
# short connection beside (client and member included: the kernel path runs on their
# behalf). As root; nothing is left on the machine's root namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
# shellcheck source=hack/lib/bench.sh
source hack/lib/bench.sh
DUR=${DUR:-5} ROUNDS=${ROUNDS:-3}
[[ $(id -u) == 0 ]] || { echo "bench-kernel.sh: needs root (network namespaces, nftables)" >&2; exit 1; }
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Addresses inside the namespaces only (none joins the root namespace).
c=l4lb-bench-client n=l4lb-bench-node m=l4lb-bench-member
VIP=10.99.9.1 MEMBER=10.99.2.2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for ns in $c $n $m; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/l4lb" . && go build -o "$work/bench" ./hack/bench

for ns in $c $n $m; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth0 netns $c type veth peer name eth0 netns $n
ip link add eth1 netns $n type veth peer name eth0 netns $m
ip -n $c addr add 10.99.1.2/24 dev eth0; ip -n $c link set eth0 up; ip -n $c route add default via 10.99.1.1
ip -n $n addr add 10.99.1.1/24 dev eth0; ip -n $n link set eth0 up
ip -n $n addr add 10.99.2.1/24 dev eth1; ip -n $n link set eth1 up
ip -n $m addr add $MEMBER/24 dev eth0; ip -n $m link set eth0 up; ip -n $m route add default via 10.99.2.1
ip -n $n addr add $VIP/32 dev lo
ip netns exec $n sysctl -qw net.ipv4.ip_forward=1
# ACCT=1 turns conntrack's per-flow packet and byte accounting on in the node (off by default):
# what telling a successor only of flows past a few packets, as IPVS's sync_threshold does,
# would need; the bench then shows what it costs every flow.
[[ ${ACCT:-0} == 1 ]] && ip netns exec $n sysctl -qw net.netfilter.nf_conntrack_acct=1
# inns runs a command in a namespace; started in the background (&), its $! is the command's
# own process (exec), so cleanup can stop it.
inns() { local ns=$1; shift; exec ip netns exec "$ns" "$@"; }

# The member: an HTTP server and an iperf3 server.
(inns $m "$work/bench" http-server $MEMBER:18080) & pids+=($!)
(inns $m iperf3 -s -B $MEMBER -p 15201 >/dev/null 2>&1) & pids+=($!)
# The BPF ceiling's member ports: its programs translate every packet from them.
(inns $m "$work/bench" http-server $MEMBER:18081) & pids+=($!)
# The kernel path without SYN cookies has a member port of its own: both instances keep the
# client's port towards the member (from the VIP), so on one member port a measurement would
# meet the member's TIME_WAIT sockets of the other's (the client's TCP timestamps differ by
# listener port: PAWS drops the SYN, retransmitted a second later), whichever came second.
(inns $m "$work/bench" http-server $MEMBER:18082) & pids+=($!)
(inns $m iperf3 -s -B $MEMBER -p 15202 >/dev/null 2>&1) & pids+=($!)

# lb NAME PORT-HTTP PORT-BULK MEMBER-HTTP: a load balancer on the VIP with an HTTP and a bulk
# listener.
lb() {
  cat <<YAML
apiVersion: lb.l4lb.io/v1alpha1
kind: LoadBalancer
metadata: {name: $1}
spec: {provider: static, vip: {address: $VIP}}
YAML
  for l in "http $2 $4" "bulk $3 15201"; do
    read -r name port member <<<"$l"
    cat <<YAML
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Listener
metadata: {name: $1-$name}
spec: {loadBalancerRef: {name: $1}, protocol: TCP, protocolPort: $port}
---
apiVersion: lb.l4lb.io/v1alpha1
kind: Pool
metadata: {name: $1-$name}
spec: {listenerRef: {name: $1-$name}, protocol: TCP, lbAlgorithm: ROUND_ROBIN, members: [{name: a, address: $MEMBER, protocolPort: $member}]}
YAML
  done
}
lb kernel 29080 29201 18080 >"$work/kernel.yaml"
lb proxy 28080 28201 18080 >"$work/proxy.yaml"
lb nocookies 27080 27201 18082 >"$work/nocookies.yaml"
# The kernel path is l4lb's default; the proxy is the same binary with --kernel-tcp=false
# (and --kernel-udp=false: it opens no nftables table, so the kernel path's instance claims
# the first tag, whose flows the flow watch below reads, whichever of the two starts first).
(inns $n env GOMAXPROCS=2 "$work/l4lb" dataplane --config "$work/kernel.yaml" --metrics-bind-address 0 2>"$work/kernel.log") & pids+=($!)
(inns $n env GOMAXPROCS=2 "$work/l4lb" dataplane --config "$work/proxy.yaml" --kernel-tcp=false --kernel-udp=false --metrics-bind-address 0 2>"$work/proxy.log") & pids+=($!)
# The kernel path without SYN cookies (--syn-cookies-above=0), to show what they spare in a
# flood (and that quiet traffic never meets them); started once the first has claimed its tag.
sleep 1
(inns $n env GOMAXPROCS=2 "$work/l4lb" dataplane --config "$work/nocookies.yaml" --syn-cookies-above=0 --metrics-bind-address 0 2>"$work/nocookies.log") & pids+=($!)
{
  haproxy_common
  cat <<CFG
frontend http
  bind $VIP:38080
  default_backend http
backend http
  balance roundrobin
  server a $MEMBER:18080
frontend bulk
  bind $VIP:38201
  default_backend bulk
backend bulk
  server a $MEMBER:15201
CFG
} >"$work/haproxy.cfg"
(inns $n haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1) & pids+=($!)
(inns $n "$work/bench" bpf-nat eth0 eth1 $VIP:30080=$MEMBER:18081 $VIP:30201=$MEMBER:15202 2>"$work/bpf.log") & pids+=($!)
sleep 2
grep -q 'every listener goes through the proxy' "$work/kernel.log" && { echo "bench-kernel.sh: nftables cannot be programmed here" >&2; exit 1; }
[[ -s $work/bpf.log ]] && { echo "bench-kernel.sh: the BPF ceiling did not load: $(cat "$work/bpf.log")" >&2; exit 1; }

declare -A host=([direct]=$MEMBER [kernel]=$VIP [bpf]=$VIP [proxy]=$VIP [haproxy]=$VIP [nocookies]=$VIP)
declare -A http=([direct]=18080 [kernel]=29080 [bpf]=30080 [proxy]=28080 [haproxy]=38080 [nocookies]=27080)
declare -A bulk=([direct]=15201 [kernel]=29201 [bpf]=30201 [proxy]=28201 [haproxy]=38201 [nocookies]=27201)
paths=(direct kernel bpf proxy haproxy)
declare -A r
add() { r[$1]="${r[$1]:-} $2"; }
iperf() { # path streams -> Gbit/s
  (inns $c iperf3 -c "${host[$1]}" -p "${bulk[$1]}" -P "$2" -t "$DUR" -J 2>/dev/null) |
    python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
wrkrun() { # path extra-args -> "rps p50ms p99ms"
  local p=$1; shift
  (inns $c wrk -t2 -c64 -d"${DUR}s" --latency "$@" "http://${host[$p]}:${http[$p]}/" 2>/dev/null) | wrk_summary
}
# cookies_valid: connections the node's SYN proxy set up so far (0 before its first rule).
cookies_valid() {
  ip netns exec $n cat /proc/net/stat/synproxy 2>/dev/null | python3 -c '
import sys
lines=sys.stdin.read().split("\n"); h=lines[0].split() if lines[0] else []
print(sum(int(v,16) for l in lines[1:] if l.strip() for k,v in zip(h,l.split()) if k=="cookie_valid"))'
}
for _ in $(seq "$ROUNDS"); do
  [[ ${FLOOD:-yes} == only ]] && break
  for p in "${paths[@]}"; do add "bulk1_$p" "$(iperf "$p" 1)"; done
  for p in "${paths[@]}"; do add "bulk8_$p" "$(iperf "$p" 8)"; done
  for p in "${paths[@]}"; do
    t0=$(busy)
    read -r a _ b <<<"$(wrkrun "$p" -H 'Connection: close')"
    add "cps_$p" "$a"; add "cps99_$p" "$b"
    add "cpscpu_$p" "$(python3 -c "print(($(busy) - $t0) * 10000 / ($a * $DUR))")"
  done
  for p in "${paths[@]}"; do
    read -r a _ _ <<<"$(wrkrun "$p")"
    add "ka_$p" "$a"
  done
  # The kernel path without SYN cookies, right after the same measurement with them.
  for p in kernel nocookies; do
    t0=$(busy) k0=$(cookies_valid)
    read -r a _ b <<<"$(wrkrun $p -H 'Connection: close')"
    add "scps_$p" "$a"; add "scps99_$p" "$b"
    add "scpscpu_$p" "$(python3 -c "print(($(busy) - $t0) * 10000 / ($a * $DUR))")"
    add "scookies_$p" "$(python3 -c "print(round(($(cookies_valid) - $k0) * 100 / ($a * $DUR)))")"
  done
  # The kernel path as a VIP's holder in a cluster runs it: watching its flows for the
  # successor (agent.FlowSync's conntrack events), which the standalone node does not; right
  # after the same measurement without the watch, so both find conntrack alike.
  t0=$(busy)
  read -r a _ b <<<"$(wrkrun kernel -H 'Connection: close')"
  add "ucps_kernel" "$a"; add "ucps99_kernel" "$b"
  add "ucpscpu_kernel" "$(python3 -c "print(($(busy) - $t0) * 10000 / ($a * $DUR))")"
  if [[ ${WATCHER:-} == conntrack ]]; then
    (ip netns exec $n timeout $((DUR + 1)) conntrack -E -e NEW,DESTROY >/dev/null 2>&1 || true; echo "conntrack -E" >"$work/flowwatch.out") & fw=$!
  else
    # 0x50: the first tag l4lb standalone claims, the kernel path's instance (the only one with a table).
    (sleep $((DUR + 1)) | inns $n "$work/bench" flowwatch $VIP 0x50 >"$work/flowwatch.out") & fw=$!
  fi
  sleep 0.5
  t0=$(busy)
  read -r a _ b <<<"$(wrkrun kernel -H 'Connection: close')"
  add "wcps_kernel" "$a"; add "wcps99_kernel" "$b"
  add "wcpscpu_kernel" "$(python3 -c "print(($(busy) - $t0) * 10000 / ($a * $DUR))")"
  wait $fw
done
for k in "${!r[@]}"; do r[$k]=$(median ${r[$k]}); done
cookies=$( ("$work/l4lb" dataplane -h 2>&1 || true) | grep -A1 -- '-syn-cookies-above' | grep -o 'default [0-9]*' | cut -d' ' -f2)
[[ ${FLOOD:-yes} == only ]] || {

echo "Host: Linux $(uname -r), $(nproc) cores; client, node and member are network namespaces; $ROUNDS rounds of ${DUR} s, medians."
echo
echo "| TCP | direct | l4lb kernel path | BPF ceiling | l4lb proxy | HAProxy 2.6 | kernel / direct | kernel / HAProxy | proxy / HAProxy | kernel / BPF ceiling |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for row in "bulk, 1 stream (Gbit/s):bulk1" "bulk, 8 streams (Gbit/s):bulk8" "short connections (req/s, 64 concurrent):cps" \
  "short connections p99 (ms, 64 concurrent):cps99" "machine CPU µs per short connection:cpscpu" "keep-alive requests (req/s, 64 concurrent):ka"; do
  name=${row%%:*} k=${row##*:}
  echo "| $name | ${r[${k}_direct]} | ${r[${k}_kernel]} | ${r[${k}_bpf]} | ${r[${k}_proxy]} | ${r[${k}_haproxy]} | $(ratio "${r[${k}_kernel]}" "${r[${k}_direct]}") | $(ratio "${r[${k}_kernel]}" "${r[${k}_haproxy]}") | $(ratio "${r[${k}_proxy]}" "${r[${k}_haproxy]}") | $(ratio "${r[${k}_kernel]}" "${r[${k}_bpf]}") |"
done
echo
echo "Short connections through the kernel path with its defaults (SYN cookies once a listener has over $cookies half-open connections) and without SYN cookies (--syn-cookies-above=0), one measurement after the other:"
echo
echo "| | defaults | without SYN cookies | defaults / without |"
echo "|---|---|---|---|"
for row in "req/s (64 concurrent):scps" "p99 (ms):scps99" "machine CPU µs per connection:scpscpu" "set up by SYN cookies (%):scookies"; do
  name=${row%%:*} k=${row##*:}
  echo "| $name | ${r[${k}_kernel]} | ${r[${k}_nocookies]} | $(ratio "${r[${k}_kernel]}" "${r[${k}_nocookies]}") |"
done
echo
echo "Short connections through the kernel path with and without a holder's flow watch, one measurement after the other:"
echo
echo "| | without | with the flow watch | with / without |"
echo "|---|---|---|---|"
for row in "req/s (64 concurrent):cps" "p99 (ms):cps99" "machine CPU µs per connection:cpscpu"; do
  name=${row%%:*} k=${row##*:}
  echo "| $name | ${r[u${k}_kernel]} | ${r[w${k}_kernel]} | $(ratio "${r[w${k}_kernel]}" "${r[u${k}_kernel]}") |"
done
echo
echo "The flow watch's last run would have told its successor: $(cat "$work/flowwatch.out")."
}

# A SYN flood at one listener while another listener of the same VIP serves short
# connections (issue 29): spoofed sources of 10.99.128.0/17, FLOOD_RATE SYNs a second for
# FLOOD_SECS, from the client host (the member answers each with a SYN-ACK that nobody takes;
# the node routes them back to the client host, which drops them). The other listener is
# measured quiet, then in the flood's last seconds, when the connection-tracking table is
# fullest; the node's conntrack entries at that moment and the drops during the flood are
# printed beside. The same for HAProxy (its bulk port flooded, its HTTP port measured). Each
# round measures the three one after the other, each pair (quiet, then flooded) back to back,
# and empties the node's table after each (a flood at HAProxy keeps it full for a minute);
# the medians of ROUNDS rounds are printed, the ratio being the median of the pairs' ratios.
# The two cores are shared by the flooder, the node, the member and the measured clients, so
# the flooder's own CPU comes off the measured listener too. FLOOD_PATHS picks among
# "kernel nocookies haproxy" (all by default): a 10 % bar needs many rounds on shared
# cores, whose speed drifts from one measurement to the next. PERF=FILE records the whole
# machine (perf record -a -g) for 5 s of the kernel path's first flood, before its
# measurement.
[[ ${FLOOD:-yes} == no ]] && exit 0
FLOOD_RATE=${FLOOD_RATE:-20000} FLOOD_SECS=${FLOOD_SECS:-20}
ip -n $n route add 10.99.128.0/17 via 10.99.1.2
ctcount() { ip netns exec $n cat /proc/sys/net/netfilter/nf_conntrack_count; }
ctdrops() {
  ip netns exec $n cat /proc/net/stat/nf_conntrack | python3 -c '
import sys
lines=sys.stdin.read().split("\n"); h=lines[0].split()
print(sum(int(v,16) for l in lines[1:] if l.strip() for k,v in zip(h,l.split()) if k in ("drop","early_drop","insert_failed")))'
}
echo
echo "SYN flood: $FLOOD_RATE SYNs/s for $FLOOD_SECS s at one listener; another listener of the VIP serves short connections (req/s, p99 ms, 64 concurrent); conntrack max $(ip netns exec $n cat /proc/sys/net/netfilter/nf_conntrack_max); $ROUNDS rounds of ${DUR} s, medians."
echo
# The kernel path with its defaults (SYN cookies once the flooded listener has too many
# half-open connections), then without SYN cookies, then HAProxy, whose flood fills the
# node's table.
declare -A f
fadd() { f[$1]="${f[$1]:-} $2"; }
for round in $(seq "$ROUNDS"); do
  for p in ${FLOOD_PATHS:-kernel nocookies haproxy}; do
    read -r qa _ q99 <<<"$(wrkrun "$p" -H 'Connection: close')"
    d0=$(ctdrops)
    (inns $c "$work/bench" synflood "$VIP:${bulk[$p]}" 10.99.128.0/17 "$FLOOD_RATE" "$FLOOD_SECS" >"$work/flood.out") & fp=$!
    sleep 1
    [[ -n ${PERF:-} && $p == kernel && $round == 1 ]] && { perf record -q -a -g -o "$PERF" -- sleep 5 >/dev/null 2>&1 & }
    t0=$(busy)
    sleep $((FLOOD_SECS - DUR - 2))
    fadd "cpu_$p" "$(python3 -c "print('%.0f' % (($(busy) - $t0) * 10000 / ($FLOOD_RATE * ($FLOOD_SECS - $DUR - 2))))")"
    read -r fa _ f99 <<<"$(wrkrun "$p" -H 'Connection: close')"
    fadd "peak_$p" "$(ctcount)"
    wait $fp
    fadd "q_$p" "$qa"; fadd "f_$p" "$fa"; fadd "ratio_$p" "$(ratio "$fa" "$qa")"
    fadd "q99_$p" "$q99"; fadd "f99_$p" "$f99"; fadd "ratio99_$p" "$(ratio "$f99" "$q99")"
    fadd "drops_$p" "$(($(ctdrops) - d0))"
    sleep 2
    (inns $n "$work/bench" ctflush)
    sleep 3
  done
done
echo "| path | quiet req/s | in the flood req/s | ratio | quiet p99 | in the flood p99 | ratio | conntrack entries in the flood | conntrack drops | machine CPU µs per flood SYN |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for p in ${FLOOD_PATHS:-kernel nocookies haproxy}; do
  row="| $p"
  for k in q f ratio q99 f99 ratio99 peak drops cpu; do row+=" | $(median ${f[${k}_$p]})"; done
  echo "$row |"
done
echo
for p in ${FLOOD_PATHS:-kernel nocookies haproxy}; do
  echo "Each round, $p: req/s in the flood / quiet${f[ratio_$p]}; p99${f[ratio99_$p]}; machine CPU µs per flood SYN${f[cpu_$p]}."
done
