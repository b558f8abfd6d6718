#!/usr/bin/env bash
# jobs.sh: figures of the background jobs, each measured once in one run on
# this machine (shared and noisy: compare figures of the same run only).
#
#  1. import: N keys of 100-byte values from a redis-cli --pipe file and
#     from an NDJSON file (import jobs, async batches + a final sync),
#     against redis-cli --pipe of the same file into redis-server (default
#     config: no AOF, so nothing is fsynced) and into kvd itself.
#  2. backup: kvctl backup save of the resulting store, against dd writing
#     as many bytes with a final fdatasync to the same file system.
#  3. write p99: redis-benchmark SET (-c 8, 1 KiB values, sync commits)
#     idle, then while backups run back to back.
#
# Needs: redis-server, redis-cli, redis-benchmark (Debian: redis-server
# redis-tools), dd.
# Usage: bench/jobs.sh KVD KVCTL [N [import]]   e.g. bench/jobs.sh /tmp/kvd /tmp/kvctl 1000000
# With "import" last, only the two import jobs run (no redis, backup or p99),
# then kvd stops cleanly and its CPU time from start to exit is printed:
# quick enough to repeat, as this machine's noise asks.
set -euo pipefail
kvd=$1 kvctl=$2 n=${3:-1000000} only=${4:-all}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-jobs.XXXXXX")
kvdpid() { cat "$work/kvd.pid" 2>/dev/null; }
trap 'kill $(jobs -p) $(kvdpid) 2>/dev/null || true; wait; rm -rf "$work"' EXIT
rport=7420 hport=7421 redisport=7422
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

mkdir -p "$work/data/backups"
awk -v n="$n" 'BEGIN { v = sprintf("%0100d", 0)
  for (i = 0; i < n; i++) { k = sprintf("key%09d", i); printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n", length(k), k, v } }' \
  >"$work/data/backups/keys.resp"
awk -v n="$n" 'BEGIN { v = sprintf("%0100d", 0)
  for (i = 0; i < n; i++) printf "{\"key\":\"nd%09d\",\"value\":\"%s\"}\n", i, v }' >"$work/data/backups/keys.ndjson"

# redis-cli --pipe into redis-server.
[ "$only" = import ] || {
redis-server --port "$redisport" --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
for _ in $(seq 50); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done
a=$(now); redis-cli -p "$redisport" --pipe <"$work/data/backups/keys.resp" >/dev/null; b=$(now)
echo "redis-cli --pipe into redis-server (no AOF): $(rate "$n" "$a" "$b") keys/s"
redis-cli -p "$redisport" shutdown nosave >/dev/null 2>&1 || true
}

# kvd in a subshell of its own, whose `times` gives kvd's CPU once it exits.
( "$kvd" --data-dir "$work/data" --listen "127.0.0.1:$rport" --http-listen "127.0.0.1:$hport" \
  --commit-mode sync >"$work/kvd.log" 2>&1 & echo $! >"$work/kvd.pid"; wait; times >"$work/kvd.times" ) &
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
export KVCTL_ADDR=127.0.0.1:$rport
a=$(now); "$kvctl" import keys.resp >/dev/null; b=$(now)
echo "kvd import job, redis-cli --pipe format: $(rate "$n" "$a" "$b") keys/s"
a=$(now); "$kvctl" import keys.ndjson >/dev/null; b=$(now)
echo "kvd import job, NDJSON:                  $(rate "$n" "$a" "$b") keys/s"
if [ "$only" = import ]; then
  # A clean stop checkpoints what the imports left in memory.
  kill "$(kvdpid)"; wait
  awk 'NR == 2 { gsub(/[ms]/, " "); printf "kvd CPU, start to clean exit (both imports, all checkpointed): %.1f s\n", $1 * 60 + $2 + $3 * 60 + $4 }' "$work/kvd.times"
  exit 0
fi
redis-cli -p "$rport" flushall >/dev/null 2>&1 || true
a=$(now); redis-cli -p "$rport" --pipe <"$work/data/backups/keys.resp" >/dev/null; b=$(now)
echo "redis-cli --pipe into kvd (sync commits): $(rate "$n" "$a" "$b") keys/s"

# Backup against dd.
a=$(now); "$kvctl" backup save --http-addr "127.0.0.1:$hport" "$work/b.kvdsnap" >/dev/null; b=$(now)
size=$(stat -c %s "$work/b.kvdsnap")
echo "backup: $size bytes in $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b-a}') s: $(awk -v s="$size" -v a="$a" -v b="$b" 'BEGIN{printf "%.0f", s/(b-a)/1048576}') MiB/s"
a=$(now); dd if=/dev/zero of="$work/dd.out" bs=1M count=$((size / 1048576 + 1)) conv=fdatasync status=none; b=$(now)
echo "dd (write, fdatasync) of as many bytes:    $(awk -v s="$size" -v a="$a" -v b="$b" 'BEGIN{printf "%.0f", s/(b-a)/1048576}') MiB/s"
rm -f "$work/dd.out" "$work/b.kvdsnap"

# Write p99 idle and during backups.
p99() { redis-benchmark -p "$rport" -t set -d 1024 -r 100000 -n 20000 -c 8 --csv 2>/dev/null |
  awk -F, 'NR == 2 { gsub(/"/, "", $7); print $7 }'; }
echo "write p99 (SET, 8 clients, sync), idle:        $(p99) ms"
( while :; do "$kvctl" backup save --http-addr "127.0.0.1:$hport" "$work/loop.kvdsnap" >/dev/null 2>&1 || true; done ) &
loop=$!
sleep 0.5
echo "write p99 (SET, 8 clients, sync), in a backup: $(p99) ms"
kill "$loop"; wait "$loop" 2>/dev/null || true
