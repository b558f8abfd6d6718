#!/usr/bin/env bash
# restart.sh: how long kvd takes to come back after a kill -9 under write load.
#
# Starts a kvd (async commit mode, a fresh temporary data dir), drives it with
# pipelined SETs (redis-benchmark -t set -d 100 -r 100000 -c 50 -P 16), kills
# it with SIGKILL the moment the load ends, restarts it on the same directory
# and prints the time from the restart to its first PONG, the log records it
# replayed (from kvd's "engine: opened" line) and the log's size on disk at
# the kill.
#
# Usage: bench/restart.sh KVD-BINARY [REQUESTS [KVD-FLAGS...]]
#   REQUESTS defaults to 3000000 (about 4 s on a 2-vCPU machine).
# Example: go build -o /tmp/kvd ./cmd/kvd && bench/restart.sh /tmp/kvd
#          bench/restart.sh /tmp/kvd 3000000 --checkpoint-log-bytes 1GiB
set -euo pipefail
[ $# -ge 1 ] || { sed -n "2,14p" "$0" >&2; exit 2; }
bin=$1 requests=${2:-3000000}
shift $(($# >= 2 ? 2 : 1))
for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "restart.sh: $tool not found (apt-get install redis-tools)" >&2; exit 1; }
done
lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
port=$((10000 + RANDOM % (lo - 10000)))
dir=$(mktemp -d "${TMPDIR:-/tmp}/kvd-restart.XXXXXX")
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir" "$dir".log*' EXIT

start() { # start kvd on $dir with flags "$@", output to $log; wait for PONG
  "$bin" --data-dir "$dir" --listen "127.0.0.1:$port" --http-listen '' --commit-mode async "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.01
  done
  echo "restart.sh: kvd did not answer within 30 s" >&2
  exit 1
}

log=$dir.log1
start "$@"
t0=$(date +%s%N)
redis-benchmark -p "$port" -t set -d 100 -r 100000 -c 50 -P 16 -n "$requests" -q >/dev/null
t1=$(date +%s%N)
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
wal=$(du -sm "$dir/wal" | cut -f1)

log=$dir.log2
s=$(date +%s%N)
start "$@"
e=$(date +%s%N)
replayed=$(grep -o 'replayed=[0-9]*' "$log" | cut -d= -f2)
awk -v n="$requests" -v t0="$t0" -v t1="$t1" -v s="$s" -v e="$e" -v r="$replayed" -v w="$wal" 'BEGIN {
  printf "load: %d SETs in %.2f s; log at kill: %d MiB; restart to PONG: %.2f s, %s records replayed\n",
    n, (t1 - t0) / 1e9, w, (e - s) / 1e9, r }'
