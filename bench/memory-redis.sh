#!/usr/bin/env bash
# memory-redis.sh: kvd's memory and disk beside Redis's, in one run on one
# machine (issue 22's tables). Two parts, one after the other:
#
# "table": redis-benchmark -t set -d 100 -r 1000000 -n 3000000 -P 16 -c 50
#   against kvd (async, default --max-memory 1GiB) and against Redis
#   (appendonly yes, appendfsync everysec), one server at a time. For each:
#   anonymous and file-backed resident memory (RssAnon, RssFile of
#   /proc/PID/status) when idle before the load, at most during it (sampled
#   every 0.2 s) and 7 s, 30 s and 140 s after it; the Go heap (kvd) or
#   used_memory (Redis); the data directory's size; then kill -9 and the
#   time from the restart until the server answers PING with PONG.
#
# "large": a data set 8 times kvd's budget. KEYS keys (default 10,000,000)
#   key:000000000000... of 100-byte values, written in order through
#   redis-cli --pipe, into kvd under --max-memory 128MiB: the load's time
#   and peak resident memory, kill -9 and restart (time until PONG, DBSIZE),
#   then random GETs (redis-benchmark -t get -r KEYS -c 50, not pipelined)
#   cold and warm: cold after the page cache is dropped (echo 3 >
#   /proc/sys/vm/drop_caches if permitted, else the state file's cached
#   pages alone, dd iflag=nocache, which the script says), warm after the
#   state file was read through once (cat >/dev/null). Then Redis under maxmemory 128mb and noeviction gets the
#   same stream and refuses writes past its limit: its first error, the
#   count, and the keys it holds.
#
# Throughput on a shared machine is noisy; the memory figures are what this
# measures.
#
# Needs: go, redis-server, redis-benchmark, redis-cli
#   (Debian: apt-get install redis-server redis-tools)
# Usage: bench/memory-redis.sh [table|large|all]   (default all)
#   environment: KEYS (large part, default 10000000), GETS (random GETs per
#   run, default 200000), KVD (a kvd binary; default: built from this tree)
set -euo pipefail
cd "$(dirname "$0")/.."

part=${1:-all}
keys=${KEYS:-10000000}
gets=${GETS:-200000}
for tool in go redis-server redis-benchmark redis-cli; do
  if ! command -v "$tool" >/dev/null; then
    echo "memory-redis.sh: $tool not found; install with: apt-get install redis-server redis-tools" >&2
    exit 1
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-memredis.XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

kvd=${KVD:-}
if [ -z "$kvd" ]; then
  go build -o "$work/kvd" ./cmd/kvd
  kvd=$work/kvd
fi

port=$((20000 + RANDOM % 10000))

# mib BYTES: bytes in MiB, one decimal.
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# rss PID: "ANON FILE", in bytes, from /proc/PID/status.
rss() { awk '/^RssAnon:/ { a = $2 * 1024 } /^RssFile:/ { f = $2 * 1024 } END { print a + 0, f + 0 }' "/proc/$1/status"; }
# info FIELD: a field of INFO.
info() { redis-cli -p "$port" info all | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# ready: wait until the server on $port answers PING with PONG.
ready() {
  for _ in $(seq 1 6000); do
    if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = "PONG" ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; return 1; }
    sleep 0.01
  done
  echo "server did not answer within 60 s" >&2
  return 1
}

start_kvd() { # DIR [ARGS...]
  local dir=$1; shift
  "$kvd" --data-dir "$dir" --listen "127.0.0.1:$port" --http-listen "" --commit-mode async "$@" \
    >>"$work/kvd.log" 2>&1 &
  pid=$!
}
start_redis() { # DIR [ARGS...]
  local dir=$1; shift
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" "$@" >>"$work/redis.log" 2>&1 &
  pid=$!
}
stop() { kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# sampler FILE: the largest RssAnon and RssFile of $pid, every 0.2 s, into
# FILE, until FILE.stop exists.
sampler() {
  local out=$1 a=0 f=0 x y
  while [ ! -e "$out.stop" ]; do
    read -r x y < <(rss "$pid" 2>/dev/null || echo "0 0")
    [ "$x" -gt "$a" ] && a=$x
    [ "$y" -gt "$f" ] && f=$y
    echo "$a $f" >"$out"
    sleep 0.2
  done
}

# heap: the Go heap (kvd: live after the last collection / held) or Redis's
# used_memory.
heap() {
  if [ "$1" = kvd ]; then
    echo "heap live $(mib "$(info heap_live_bytes)") MiB, held $(mib "$(info heap_total_bytes)") MiB"
  else
    echo "used_memory $(mib "$(info used_memory)") MiB"
  fi
}

table() { # NAME
  local name=$1 dir=$work/$1-data t0 a f
  if [ "$name" = kvd ]; then start_kvd "$dir"; else start_redis "$dir" --appendonly yes --appendfsync everysec; fi
  ready
  sleep 1
  read -r a f < <(rss "$pid")
  echo "$name idle:           anon $(mib "$a") MiB, file $(mib "$f") MiB"
  rm -f "$work/peak" "$work/peak.stop"
  sampler "$work/peak" &
  local sp=$!
  redis-benchmark -p "$port" -t set -d 100 -r 1000000 -n 3000000 -P 16 -c 50 -q 2>/dev/null |
    tr '\r' '\n' | grep -E '^SET: .*requests per second' | sed "s/^/$name load:           /"
  touch "$work/peak.stop"; wait "$sp"
  t0=$(now)
  read -r a f <"$work/peak"
  echo "$name during the load: anon at most $(mib "$a") MiB, file at most $(mib "$f") MiB"
  for at in 7 30 140; do
    sleep "$(awk -v t0="$t0" -v at="$at" -v n="$(now)" 'BEGIN { d = t0 + at - n; print (d > 0 ? d : 0) }')"
    read -r a f < <(rss "$pid")
    echo "$name ${at}s after:     anon $(mib "$a") MiB, file $(mib "$f") MiB; $(heap "$name"); on disk $(mib "$(du -sb "$dir" | cut -f1)") MiB"
  done
  if [ "$name" = kvd ]; then
    echo "kvd state file:       $(mib "$(info state_file_bytes)") MiB for $(info state_keys) keys of $(mib "$(info state_data_bytes)") MiB (keys and values), $(mib "$(info state_free_bytes)") MiB of it free pages"
  else
    echo "redis keys:           $(redis-cli -p "$port" dbsize)"
  fi
  stop
  t0=$(now)
  if [ "$name" = kvd ]; then start_kvd "$dir"; else start_redis "$dir" --appendonly yes --appendfsync everysec; fi
  ready
  local took
  took=$(since "$t0")
  read -r a f < <(rss "$pid")
  echo "$name restart after kill -9: answers after ${took} s; anon $(mib "$a") MiB, file $(mib "$f") MiB; $(redis-cli -p "$port" dbsize) keys"
  stop
  rm -rf "$dir"
}

# gen N: N SETs of key:%012d and 100-byte values, in RESP, for redis-cli --pipe.
gen() {
  awk -v n="$1" 'BEGIN {
    v = sprintf("%100s", ""); gsub(/ /, "x", v)
    for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$100\r\n%s\r\n", i, v
  }'
}

# gets LABEL: random GETs of loaded keys.
gets() {
  redis-benchmark -p "$port" -t get -r "$keys" -n "$gets" -c 50 --csv 2>/dev/null |
    awk -F'"' -v l="$1" '$2 == "GET" { printf "kvd GET %s: %s requests/s, latency avg %s ms, p50 %s ms, p99 %s ms, max %s ms\n", l, $4, $6, $10, $14, $16 }'
}

large() {
  local dir=$work/large-kvd t0 a f
  echo "large: $keys keys of 100-byte values ($(mib $((keys * 116))) MiB of keys and values) under --max-memory 128MiB"
  start_kvd "$dir" --max-memory 128MiB
  ready
  rm -f "$work/peak" "$work/peak.stop"
  sampler "$work/peak" &
  local sp=$!
  t0=$(now)
  gen "$keys" | redis-cli -p "$port" --pipe 2>&1 | tail -1 | sed 's/^/kvd load: /'
  echo "kvd load took $(since "$t0") s"
  touch "$work/peak.stop"; wait "$sp"
  read -r a f <"$work/peak"
  echo "kvd during the load: anon at most $(mib "$a") MiB, file at most $(mib "$f") MiB (budget 128 MiB)"
  sleep 7
  read -r a f < <(rss "$pid")
  echo "kvd 7s after: anon $(mib "$a") MiB, file $(mib "$f") MiB; $(heap kvd); on disk $(mib "$(du -sb "$dir" | cut -f1)") MiB"
  echo "kvd state file: $(mib "$(info state_file_bytes)") MiB for $(info state_keys) keys of $(mib "$(info state_data_bytes)") MiB"
  stop
  t0=$(now)
  start_kvd "$dir" --max-memory 128MiB
  ready
  echo "kvd restart after kill -9: answers after $(since "$t0") s; DBSIZE $(redis-cli -p "$port" dbsize)"
  # Stop it cleanly (everything checkpointed), then drop the page cache.
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    echo "cold: the page cache dropped (echo 3 > /proc/sys/vm/drop_caches)"
  else
    for file in "$dir/state.db" "$dir"/wal/*; do dd if="$file" iflag=nocache count=0 status=none; done
    echo "cold: /proc/sys/vm/drop_caches not writable here; the data directory's cached pages dropped (dd iflag=nocache); fincore of state.db: $(fincore -nb -o RES "$dir/state.db" | tr -d ' ') bytes cached"
  fi
  start_kvd "$dir" --max-memory 128MiB
  ready
  gets cold
  cat "$dir/state.db" >/dev/null
  gets warm
  read -r a f < <(rss "$pid")
  echo "kvd after the GETs: anon $(mib "$a") MiB, file $(mib "$f") MiB"
  stop
  rm -rf "$dir"

  dir=$work/large-redis
  start_redis "$dir" --maxmemory 128mb --maxmemory-policy noeviction
  ready
  gen "$keys" | redis-cli -p "$port" --pipe >"$work/pipe.out" 2>"$work/pipe.err" || true
  echo "redis (maxmemory 128mb, noeviction): $(tail -1 "$work/pipe.out")"
  echo "redis first error: $(grep -m1 -v '^$' "$work/pipe.err" || echo none)"
  echo "redis holds $(redis-cli -p "$port" dbsize) keys, used_memory $(mib "$(info used_memory)") MiB"
  echo "redis-cli set one-more x: $(redis-cli -p "$port" set one-more x 2>&1)"
  stop
  rm -rf "$dir"
}

echo "# $(date -u +%FT%TZ) $(nproc) CPUs; kvd $("$kvd" --version); $(redis-server --version | cut -d' ' -f1-3)"
case $part in
table) table kvd; table redis ;;
large) large ;;
all) table kvd; table redis; large ;;
*) echo "usage: bench/memory-redis.sh [table|large|all]" >&2; exit 2 ;;
esac
