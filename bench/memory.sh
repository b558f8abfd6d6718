#!/usr/bin/env bash
# memory.sh: the memory of kvd builds under --max-memory. For each round and
# each build it starts kvd (async mode) on a fresh data directory, writes
# 300,000 SETs of 1 KiB values under up to 1,000,000 random keys
# (redis-benchmark -c 8 -P 16), and prints INFO memory's figures right after
# the load and 6 s later (after the checkpoints), with the peak resident set
# (VmHWM, file-backed pages included).
#
# Needs: redis-benchmark and redis-cli (Debian: apt-get install redis-tools)
# Usage: bench/memory.sh BUDGET KVD [KVD...]   e.g. bench/memory.sh 64MiB /tmp/kvd
# (ROUNDS=N in the environment repeats it; default 1)
set -euo pipefail
budget=$1; shift
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-mem.XXXXXX")
trap 'rm -rf "$work"' EXIT
fields() { redis-cli -p "$1" info memory | tr -d '\r' |
  grep -E '^(memtable_bytes|heap_live_bytes|heap_total_bytes|rss_anon_bytes|rss_file_bytes):' | tr '\n' ' '; }
port=7411
for _ in $(seq "${ROUNDS:-1}"); do
  for bin in "$@"; do
    dir="$work/data-$RANDOM"
    "$bin" --data-dir "$dir" --listen "127.0.0.1:$port" --http-listen "" --commit-mode async \
      --max-memory "$budget" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-benchmark -p "$port" -t set -d 1024 -r 1000000 -n 300000 -P 16 -c 8 -q >/dev/null 2>&1
    echo "$bin after the load: $(fields "$port")$(grep VmHWM "/proc/$pid/status" | tr -s ' \t' ' ')"
    sleep 6
    echo "$bin 6s later:       $(fields "$port")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
