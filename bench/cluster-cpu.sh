#!/usr/bin/env bash
# cluster-cpu.sh: CPU time per request of each node of a 3-node kvd
# cluster (every node on its own 127.0.0.x), beside its throughput: where a
# cluster's requests spend the machine's CPU.
#
# Usage: bench/cluster-cpu.sh [OP [MODE [NODE]]]
#   OP    set or get (default set); MODE sync or async (default sync);
#   NODE  1 to send the load to the leader (n1, default), 2 for a follower.
# Environment: KVD_BENCH_N requests (default 60000), 50 clients, 100k keys.
# Prints requests/s and, per node, microseconds of CPU (user + system,
# /proc/PID/stat) per request.
#
# Needs: go, redis-benchmark, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."

op=${1:-set} mode=${2:-sync} target=${3:-1}
N=${KVD_BENCH_N:-60000}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/kvd" ./cmd/kvd

wait_port() {
  for _ in $(seq 200); do
    (echo > "/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster-cpu.sh: nothing listens on $1:$2" >&2
  return 1
}
for i in 1 2 3; do
  ip=127.0.0.1$i join=(--bootstrap)
  [ "$i" = 1 ] || join=(--join 127.0.0.11:7000)
  "$work/kvd" --data-dir "$work/n$i" --node-id "n$i" --listen "$ip:6379" --http-listen "" \
    --raft-listen "$ip:7000" "${join[@]}" --commit-mode "$mode" >"$work/n$i.log" 2>&1 &
  pids+=($!)
  wait_port "$ip" 6379
  [ "$i" = 1 ] && sleep 1.5 # n1 elects itself before the others join
done
for _ in $(seq 200); do
  [ "$(redis-cli -h 127.0.0.11 -p 6379 info replication | tr -d '\r' | grep -c '^member[0-9]')" = 3 ] && break
  sleep 0.05
done
redis-benchmark -h 127.0.0.11 -p 6379 -t set -n 20000 -c 50 -r 100000 -q >/dev/null 2>&1 # keys to read

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -a before after
for i in 0 1 2; do before[$i]=$(cpu "${pids[$i]}"); done
rps=$(redis-benchmark -h "127.0.0.1$target" -p 6379 -t "$op" -n "$N" -c 50 -r 100000 -q 2>/dev/null |
  tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | awk '{print $1}')
for i in 0 1 2; do after[$i]=$(cpu "${pids[$i]}"); done
tck=$(getconf CLK_TCK)
printf '%s %s on n%s: %s requests/s; CPU µs per request:' "$op" "$mode" "$target" "$rps"
for i in 0 1 2; do
  awk -v d=$((after[i] - before[i])) -v t="$tck" -v n="$N" -v i=$((i + 1)) 'BEGIN { printf " n%d %.1f", i, d * 1e6 / t / n }'
done
echo
