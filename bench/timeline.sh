#!/usr/bin/env bash
# timeline.sh: a running server's throughput over time under one
# redis-benchmark SET load, sampled every 100 ms from INFO, with kvd's
# checkpoint count beside it, to see where background work costs throughput.
#
# Usage: bench/timeline.sh PORT REQUESTS [CLIENTS [PIPELINE]]
#   Drives redis-benchmark -t set -d 100 -r 100000 -c CLIENTS (50) -P PIPELINE
#   (1) -n REQUESTS at 127.0.0.1:PORT and prints one line per sample:
#   seconds since the start, requests/s over the sample, checkpoints so far
#   (empty for a server without them, such as Redis).
# Example:
#   kvd --data-dir /tmp/t --listen 127.0.0.1:7000 --http-listen '' --commit-mode async &
#   bench/timeline.sh 7000 1500000
set -euo pipefail
[ $# -ge 2 ] || { sed -n "2,14p" "$0" >&2; exit 2; }
port=$1 requests=$2 clients=${3:-50} pipeline=${4:-1}
for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "timeline.sh: $tool not found (apt-get install redis-tools)" >&2; exit 1; }
done
redis-benchmark -p "$port" -t set -d 100 -r 100000 -c "$clients" -P "$pipeline" -n "$requests" -q >/dev/null 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT
sample() {
  redis-cli -p "$port" info | tr -d '\r' | awk -F: -v t="$(date +%s.%N)" '
    $1 == "total_commands_processed" { n = $2 } $1 == "checkpoints" { c = $2 }
    END { print t, n, c }'
}
read -r t0 n0 _ < <(sample)
tp=$t0 np=$n0
while kill -0 "$bench" 2>/dev/null; do
  sleep 0.1
  read -r t n c < <(sample)
  awk -v t="$t" -v tp="$tp" -v t0="$t0" -v n="$n" -v np="$np" -v c="$c" \
    'BEGIN { printf "%.1f %.0f %s\n", t - t0, (n - np) / (t - tp), c }'
  tp=$t np=$n
done
wait "$bench"
