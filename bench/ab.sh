#!/usr/bin/env bash
# ab.sh: an interleaved A/B of two kvd builds on the single-client and
# 50-client paths, sync mode, so that a noisy phase of the machine falls on
# both alike. Each round starts A then B on a fresh data directory and runs
# SET with 1 client, GET with 1 client and SET with 50 clients
# (redis-benchmark -d 100 -r 100000), printing requests per second.
#
# Needs: redis-benchmark (Debian: apt-get install redis-tools)
# Usage: bench/ab.sh KVD_A KVD_B [ROUNDS]   e.g. a build of the base commit
#        against go build -o /tmp/kvd-now ./cmd/kvd
set -euo pipefail
a=$1 b=$2 rounds=${3:-4}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
rps() { grep -o '[0-9.]* requests per second' | cut -d' ' -f1; }
run() { # name binary port
  local dir="$work/$1-$RANDOM"
  "$2" --data-dir "$dir" --listen "127.0.0.1:$3" --http-listen "" --commit-mode sync >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do redis-cli -p "$3" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local s g s50
  s=$(redis-benchmark -p "$3" -c 1 -n 8000 -t set -d 100 -r 100000 -q 2>/dev/null | rps)
  g=$(redis-benchmark -p "$3" -c 1 -n 20000 -t get -d 100 -r 100000 -q 2>/dev/null | rps)
  s50=$(redis-benchmark -p "$3" -c 50 -n 60000 -t set -d 100 -r 100000 -q 2>/dev/null | rps)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "$1 set_c1=$s get_c1=$g set_c50=$s50"
}
for _ in $(seq "$rounds"); do
  run A "$a" 7401
  run B "$b" 7402
done
