#!/usr/bin/env bash
# cpu.sh: throughput and server CPU per request of one server under one
# redis-benchmark workload, for A/B comparisons of builds or settings.
#
# Usage: bench/cpu.sh NAME TEST CLIENTS PIPELINE REQUESTS -- SERVER-COMMAND...
#   The server command may use $PORT and $DIR (a fresh temporary directory).
#   REPS (default 3) runs are made against one server start; a GET workload
#   is preceded by an unmeasured SET load that fills the keys.
# Example:
#   bench/cpu.sh kvd set 50 1 100000 -- ./kvd --data-dir '$DIR' --listen '127.0.0.1:$PORT' --http-listen ''
#   bench/cpu.sh redis set 50 1 100000 -- redis-server --port '$PORT' --dir '$DIR' --save '' --appendonly yes --appendfsync always
# Prints: NAME TEST cC PP rps=… p50_ms=… cpu_us_per_req=… user_us_per_req=…
# ctxsw_per_req=… minflt_per_req=… p99_ms=… max_ms=… peak_rss_mb=…
# (user+system and user CPU and minor page faults of the server process, from
# /proc/PID/stat, and context switches of all its threads, each divided by
# requests; the server's peak resident memory since it started, VmHWM).
# THREADS=1 also prints each thread's context switches and CPU time.
# CLIENT_FLAGS are more flags for redis-cli and redis-benchmark, e.g.
# CLIENT_FLAGS="--tls --cacert ca.pem" against a server on TLS.
# TEST idle sends no load: REQUESTS is then a number of seconds, CLIENTS and
# PIPELINE are ignored, and it prints the server's context switches and CPU
# per second while it sits idle (after a 2 s settle), e.g.
#   bench/cpu.sh kvd idle 0 0 10 -- ./kvd --data-dir '$DIR' --listen '127.0.0.1:$PORT' --http-listen ''
set -euo pipefail
[ $# -ge 7 ] && [ "$6" = "--" ] || { sed -n "2,23p" "$0" >&2; exit 2; }
read -r -a cflags <<<"${CLIENT_FLAGS:-}"
name=$1 test=$2 clients=$3 pipeline=$4 requests=$5
shift 6
for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "cpu.sh: $tool not found (apt-get install redis-tools)" >&2; exit 1; }
done
# A port below the kernel's ephemeral range, which client connections use.
lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
export PORT=$((10000 + RANDOM % (lo - 10000)))
DIR=$(mktemp -d "${TMPDIR:-/tmp}/kvd-cpu.XXXXXX")
export DIR
args=()
for a in "$@"; do args+=("$(eval "echo \"$a\"")"); done
"${args[@]}" >"$DIR.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$DIR" "$DIR.log" "$DIR.t0"' EXIT
for _ in $(seq 1 200); do
  [ "$(redis-cli -p "$PORT" "${cflags[@]}" ping 2>/dev/null)" = PONG ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$DIR.log" >&2; exit 1; }
  sleep 0.05
done
ticks=$(getconf CLK_TCK)
# CPU ticks (user+system), user ticks and minor faults of the server.
cpu() { awk '{ print $14 + $15, $14, $10 }' "/proc/$pid/stat"; }
# Per thread: tid, context switches (voluntary and not), CPU ticks.
threads() { for t in /proc/"$pid"/task/*; do
  echo "${t##*/} $(awk '/ctxt_switches/ { n += $2 } END { print n }' "$t/status") $(awk '{ print $14 + $15 }' "$t/stat")"
done | sort; }
# Context switches of all the server's threads.
ctxsw() { threads | awk '{ n += $2 } END { print n }'; }
if [ "$test" = idle ]; then
  sleep 2
  read -r a _ _ < <(cpu)
  sa=$(ctxsw)
  sleep "$requests"
  read -r b _ _ < <(cpu)
  sb=$(ctxsw)
  awk -v n="$name" -v s="$requests" -v a="$a" -v b="$b" -v sa="$sa" -v sb="$sb" -v hz="$ticks" \
    'BEGIN { printf "%s idle %ss ctxsw_per_s=%.1f cpu_ms_per_s=%.2f\n", n, s, (sb - sa) / s, (b - a) * 1000 / hz / s }'
  exit 0
fi
if [ "$test" = get ]; then
  redis-benchmark -p "$PORT" "${cflags[@]}" -t set -d 100 -r 100000 -n 200000 -c 50 -P 16 -q >/dev/null
fi
for _ in $(seq 1 "${REPS:-3}"); do
  read -r a ua fa < <(cpu)
  sa=$(ctxsw)
  [ -z "${THREADS:-}" ] || threads >"$DIR.t0"
  out=$(redis-benchmark -p "$PORT" "${cflags[@]}" -t "$test" -d 100 -r 100000 -c "$clients" -P "$pipeline" -n "$requests" --csv 2>/dev/null | tail -1)
  read -r b ub fb < <(cpu)
  sb=$(ctxsw)
  hwm=$(awk '/^VmHWM/ { print $2 / 1024 }' "/proc/$pid/status")
  echo "$out" | awk -F'","|"' -v n="$name" -v t="$test" -v c="$clients" -v p="$pipeline" \
    -v a="$a" -v b="$b" -v ua="$ua" -v ub="$ub" -v fa="$fa" -v fb="$fb" \
    -v r="$requests" -v hz="$ticks" -v sa="$sa" -v sb="$sb" -v hwm="$hwm" \
    '{ printf "%s %s c%s P%s rps=%s p50_ms=%s cpu_us_per_req=%.1f user_us_per_req=%.1f ctxsw_per_req=%.3f minflt_per_req=%.3f p99_ms=%s max_ms=%s peak_rss_mb=%.0f\n",
       n, t, c, p, $3, $6, (b - a) * 1e6 / hz / r, (ub - ua) * 1e6 / hz / r, (sb - sa) / r, (fb - fa) / r, $8, $9, hwm }'
  if [ -n "${THREADS:-}" ]; then
    threads | join "$DIR.t0" - | awk -v hz="$ticks" '$4 - $2 + $5 - $3 > 0 {
      printf "  thread %s: context switches %d, CPU %.0f ms\n", $1, $4 - $2, ($5 - $3) * 1000 / hz }'
  fi
done
