#!/usr/bin/env bash
# cluster.sh: kvd's 3-node cluster against single-node kvd and a 3-node etcd
# cluster, in one run on one machine (every node on its own 127.0.0.x).
#
# Measures, with redis-benchmark against kvd and bench/etcdload (etcd's Go
# client, the same shape of load) against etcd:
#   - single-node kvd: SET c=50 sync and async, GET c=50;
#   - kvd cluster: SET c=50 sync and async on the leader, GET c=50
#     linearizable on the leader and on a follower, and stale on a
#     follower (the cluster restarted with --read-consistency stale);
#   - etcd cluster: PUT c=50, GET c=50 linearizable;
# and prints the ratios the cluster targets are stated in (README,
# "Cluster mode"), and beside each kvd measurement the CPU time per request
# of each kvd process (user + system, /proc/PID/stat) and of the whole
# machine, the load generator included, with its busy share (/proc/stat):
# where a cluster's requests spend the machine's two CPUs, and how many
# CPUs the async SET target would take at the cluster's cost per SET.
#
# Needs: go, redis-benchmark, redis-cli, etcd (Debian: apt-get install
# redis-tools etcd-server; installed when missing if run as root).
# Usage: bench/cluster.sh      environment: KVD_BENCH_N (requests per measurement, default 100000),
#                              KVD_BIN=path to run that kvd binary instead of building
#                              ./cmd/kvd (A/B runs of two builds)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${KVD_BENCH_N:-100000}
if ! command -v etcd >/dev/null || ! command -v redis-benchmark >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server redis-tools >/dev/null
  else
    echo "cluster.sh: needs etcd and redis-benchmark: apt-get install etcd-server redis-tools" >&2
    exit 1
  fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${KVD_BIN:-}" ]; then
  cp "$KVD_BIN" "$work/kvd"
else
  go build -o "$work/kvd" ./cmd/kvd
fi
(cd bench/etcdload && go build -o "$work/etcdload" .)

wait_port() { # host port
  for _ in $(seq 200); do
    (echo > "/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster.sh: nothing listens on $1:$2" >&2
  return 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

rb() { # host op -> requests per second
  redis-benchmark -h "$1" -p 6379 -t "$2" -n "$N" -c 50 -r 100000 -q 2>/dev/null |
    tr '\r' '\n' | grep -Eo '^[A-Z]+: [0-9.]+ requests per second' | tail -1 | awk '{print $2}'
}

declare -A R C M
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system ticks of pid $1
# The machine's busy and idle ticks, all CPUs together (/proc/stat).
machine() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
# rbc NAME HOST OP: R[NAME] = rb HOST OP, C[NAME] = each running kvd's CPU
# time per request, in µs (in the order of pids), and M[NAME] = the whole
# machine's (the load generator and the nodes included) with its busy share.
rbc() {
  local before=() i m0 m1
  for i in "${!pids[@]}"; do before[$i]=$(cpu "${pids[$i]}"); done
  m0=$(machine)
  R[$1]=$(rb "$2" "$3")
  m1=$(machine)
  C[$1]=$(for i in "${!pids[@]}"; do
    awk -v d=$(($(cpu "${pids[$i]}") - before[i])) -v t="$tck" -v n="$N" 'BEGIN { printf "%.1f ", d * 1e6 / t / n }'
  done)
  M[$1]=$(awk -v a="$m0" -v b="$m1" -v t="$tck" -v n="$N" 'BEGIN {
    split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
    share = 0; if (busy + idle > 0) share = 100 * busy / (busy + idle)
    printf "%.1f (%d%%)", busy * 1e6 / t / n, share }')
}

# --- single-node kvd ---
start_single() {
  "$work/kvd" --data-dir "$work/single" --listen 127.0.0.31:6379 --http-listen "" "$@" >"$work/single.log" 2>&1 &
  pids+=($!)
  wait_port 127.0.0.31 6379
}
start_single --commit-mode sync
rbc single_set_sync 127.0.0.31 set
rbc single_get 127.0.0.31 get
redis-cli -h 127.0.0.31 -p 6379 config set commit-mode async >/dev/null
rbc single_set_async 127.0.0.31 set
stop_all

# --- kvd cluster ---
start_cluster() {
  rm -rf "$work"/n1 "$work"/n2 "$work"/n3
  for i in 1 2 3; do
    local ip=127.0.0.1$i join=(--bootstrap)
    [ "$i" = 1 ] || join=(--join 127.0.0.11:7000)
    "$work/kvd" --data-dir "$work/n$i" --node-id "n$i" --listen "$ip:6379" --http-listen "" \
      --raft-listen "$ip:7000" "${join[@]}" "$@" >"$work/n$i.log" 2>&1 &
    pids+=($!)
    wait_port "$ip" 6379
    [ "$i" = 1 ] && sleep 1.5 # n1 elects itself before the others join
  done
  for _ in $(seq 200); do
    [ "$(redis-cli -h 127.0.0.11 -p 6379 info replication | tr -d '\r' | grep -c '^member[0-9]')" = 3 ] && break
    sleep 0.05
  done
}
start_cluster --commit-mode sync
rbc cluster_set_sync 127.0.0.11 set
rbc cluster_get_lin_leader 127.0.0.11 get
rbc cluster_get_lin_follower 127.0.0.12 get
redis-cli -h 127.0.0.11 -p 6379 config set commit-mode async >/dev/null
rbc cluster_set_async 127.0.0.11 set
stop_all
start_cluster --commit-mode sync --read-consistency stale
rb 127.0.0.11 set >/dev/null # a key space to read
rbc cluster_get_stale_follower 127.0.0.12 get
stop_all

# --- etcd cluster ---
initial=e1=http://127.0.0.21:2380,e2=http://127.0.0.22:2380,e3=http://127.0.0.23:2380
for i in 1 2 3; do
  ip=127.0.0.2$i
  etcd --name "e$i" --data-dir "$work/e$i" --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
    --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
    --initial-cluster "$initial" --initial-cluster-state new --log-level error >"$work/e$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_port "127.0.0.2$i" 2379; done
sleep 2
ep=127.0.0.21:2379,127.0.0.22:2379,127.0.0.23:2379
el() { "$work/etcdload" --endpoints "$ep" --op "$1" --n "$N" --clients 50 --conns 10 | awk '{print $2}'; }
R[etcd_put]=$(el put)
R[etcd_get]=$(el get)
stop_all

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '%-34s %12s   %-18s %s\n' measurement 'requests/s' 'kvd CPU µs/request' 'machine CPU µs/request (busy)'
printf '%-34s %12s   %-18s %s\n' '' '' '(n1 n2 n3)' ''
for k in single_set_sync single_set_async single_get cluster_set_sync cluster_set_async \
  cluster_get_lin_leader cluster_get_lin_follower cluster_get_stale_follower etcd_put etcd_get; do
  printf '%-34s %12s   %-18s %s\n' "$k" "${R[$k]}" "${C[$k]:-}" "${M[$k]:-}"
done
echo
printf '%-52s %6s %s\n' ratio value target
printf '%-52s %6s %s\n' 'cluster SET sync / etcd PUT' "$(ratio "${R[cluster_set_sync]}" "${R[etcd_put]}")" '>= 2'
printf '%-52s %6s %s\n' 'cluster SET sync / single-node SET sync' "$(ratio "${R[cluster_set_sync]}" "${R[single_set_sync]}")" '>= 0.4'
printf '%-52s %6s %s\n' 'cluster SET async / single-node SET async' "$(ratio "${R[cluster_set_async]}" "${R[single_set_async]}")" '>= 0.5'
printf '%-52s %6s %s\n' 'cluster GET linearizable (leader) / single-node GET' "$(ratio "${R[cluster_get_lin_leader]}" "${R[single_get]}")" '>= 0.5'
printf '%-52s %6s %s\n' 'cluster GET linearizable (follower) / single GET' "$(ratio "${R[cluster_get_lin_follower]}" "${R[single_get]}")" '>= 0.5'
printf '%-52s %6s %s\n' 'cluster GET stale (follower) / single-node GET' "$(ratio "${R[cluster_get_stale_follower]}" "${R[single_get]}")" '>= 0.9'
printf '%-52s %6s %s\n' 'cluster GET linearizable / etcd GET' "$(ratio "${R[cluster_get_lin_leader]}" "${R[etcd_get]}")" ''
echo
# What the async SET target asks of this machine: 0.5 x the single node's
# async SETs a second, at the cluster's machine CPU per async SET.
awk -v r="${R[single_set_async]}" -v m="${M[cluster_set_async]%% *}" -v c="$(nproc)" 'BEGIN {
  printf "0.5x single-node async SETs (%.0f/s) at the cluster'"'"'s %.1f µs of machine CPU each: %.2f CPUs of %d\n", r / 2, m, r / 2 * m / 1e6, c }'
