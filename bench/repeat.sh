#!/usr/bin/env bash
# repeat.sh: pipelined SETs run again and again against one kvd, paused
# between runs as compare.sh pauses it while the other servers are
# measured, for each build given. A fresh server's first run never waits
# for a checkpoint; the later ones run while the checkpoints of the earlier
# ones are written, which is where compare.sh's pipelined rows are made.
# Prints, per build, each run's requests per second and its largest
# latency in ms.
#
# Needs: redis-benchmark, redis-cli (Debian: apt-get install redis-tools)
# Usage: bench/repeat.sh KVD [KVD ...]   environment: RUNS (4), PAUSE (3 s),
#        MODE (sync or async), REQUESTS (300000)
set -euo pipefail
runs=${RUNS:-4} pause=${PAUSE:-3} mode=${MODE:-sync} n=${REQUESTS:-300000}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-repeat.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for kvd in "$@"; do
  dir="$work/data-$RANDOM"
  "$kvd" --data-dir "$dir" --listen 127.0.0.1:7403 --http-listen "" --commit-mode "$mode" >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do redis-cli -p 7403 ping >/dev/null 2>&1 && break; sleep 0.1; done
  out=
  for _ in $(seq "$runs"); do
    # --csv: test, rps, avg, min, p50, p95, p99, max (ms)
    r=$(redis-benchmark -p 7403 -t set -d 100 -r 100000 -c 50 -P 16 -n "$n" --csv 2>/dev/null | tail -1 | tr -d '"' | cut -d, -f2,8)
    out="$out ${r%,*}/s max ${r#*,} ms;"
    kill -STOP "$pid"; sleep "$pause"; kill -CONT "$pid"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
  rm -rf "$dir" "$dir.log"
  echo "$kvd $mode:$out"
done
