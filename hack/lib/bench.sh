# Helpers of the benchmark scripts (hack/bench.sh, hack/bench-kernel.sh), sourced.

# wrk_summary reads wrk --latency's output and prints "requests/s p50-ms p99-ms".
wrk_summary() {
  python3 -c '
import sys,re
t=sys.stdin.read()
def ms(v):
    n=float(re.match(r"[\d.]+",v).group()); u=v[len(re.match(r"[\d.]+",v).group()):]
    return n*{"us":0.001,"ms":1,"s":1000}.get(u,1)
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
# Anchored: a "+/- Stdev" column such as "70.50%" must not be read as the 50th percentile.
p50=ms(re.search(r"^\s+50%\s+(\S+)",t,re.M).group(1)); p99=ms(re.search(r"^\s+99%\s+(\S+)",t,re.M).group(1))
print("%.0f %.2f %.2f" % (rps,p50,p99))'
}

# median prints the median of its arguments (two decimals below 100, unless all are whole).
median() {
  python3 -c 'import statistics,sys; v=statistics.median(map(float,sys.argv[1:])); print(("%.2f" if v<100 and not all(a.isdigit() for a in sys.argv[1:]) else "%.0f") % v)' "$@"
}

# ratio prints $1/$2 with two decimals.
ratio() { python3 -c "print('%.2f' % ($1/$2) if $2 else '-')"; }

# busy prints the CPU time the whole machine has spent, in clock ticks (10 ms).
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }

# haproxy_common prints HAProxy's settings both benchmarks give it: l4lb's threads (2) and
# Octavia's default timeouts, so the peer runs as l4lb does.
haproxy_common() {
  cat <<'CFG'
global
  nbthread 2
  maxconn 9000
defaults
  mode tcp
  timeout client 50s
  timeout server 50s
  timeout connect 5s
  maxconn 9000
CFG
}
