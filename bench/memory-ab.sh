#!/usr/bin/env bash
# memory-ab.sh: an interleaved A/B of two kvd builds under issue 22's
# pipelined write load (redis-benchmark -t set -d 100 -r 1000000 -n N -P 16
# -c 50, async, default --max-memory), so that a noisy phase of the machine
# falls on both alike. Each round starts A then B on a fresh data directory
# and prints requests per second and the peak anonymous resident memory
# (RssAnon, sampled every 0.2 s) of each.
#
# Needs: redis-benchmark, redis-cli (Debian: apt-get install redis-tools)
# Usage: bench/memory-ab.sh KVD_A KVD_B [ROUNDS] [N]   (defaults 3, 1000000)
set -euo pipefail
a=$1 b=$2 rounds=${3:-3} n=${4:-1000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-memab.XXXXXX")
trap 'rm -rf "$work"' EXIT
run() { # name binary port
  local dir="$work/$1-$RANDOM" peak=0 x
  "$2" --data-dir "$dir" --listen "127.0.0.1:$3" --http-listen "" --commit-mode async >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do redis-cli -p "$3" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p "$3" -t set -d 100 -r 1000000 -n "$n" -P 16 -c 50 -q 2>/dev/null |
    tr '\r' '\n' | grep -o 'SET: [0-9.]* requests per second' | cut -d' ' -f2 >"$work/rps" &
  local bp=$!
  while kill -0 "$bp" 2>/dev/null; do
    x=$(awk '/^RssAnon:/ { print $2 * 1024 }' "/proc/$pid/status")
    [ "$x" -gt "$peak" ] && peak=$x
    sleep 0.2
  done
  wait "$bp" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "$1 set_p16=$(cat "$work/rps") peak_anon_mib=$((peak >> 20))"
}
for _ in $(seq "$rounds"); do
  run A "$a" 7403
  run B "$b" 7404
done
