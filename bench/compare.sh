#!/usr/bin/env bash
# compare.sh: kvd against Redis, in one run on one machine.
#
# Measures the raw write+fdatasync floor, then starts kvd (sync and async
# commit modes) and Redis (appendonly yes, appendfsync always and everysec),
# drives each with the same redis-benchmark invocations, repeats every
# measurement REPS times (default 3) and prints medians and kvd/Redis ratios.
#
# The servers take turns, one workload at a time: all four run their REPS
# repetitions of a workload before any moves on to the next, so that a noisy
# phase of the machine falls on all of them alike rather than on one server's
# block of runs. A server is paused (SIGSTOP) while the others are measured,
# so that its background work (kvd's checkpoints and fsyncs, Redis's everysec
# fsync) runs in its own turns. A turn is a few seconds, about kvd's
# checkpoint interval: turns much shorter than that would charge kvd with a
# checkpoint per turn, since the paused time counts towards the interval.
#
# With KVD_BENCH_TLS=1 every server speaks TLS only, with a certificate
# made for the run: kvd with --tls-cert/--tls-key (which serves RESP with a
# goroutine per connection), Redis with --tls-port; redis-benchmark and
# redis-cli connect with --tls. Clients are not asked for certificates.
#
# Needs: go, redis-server, redis-benchmark, redis-cli (and openssl for TLS)
#   (Debian: apt-get install redis-server redis-tools)
# Usage: bench/compare.sh [REPS]      environment: KVD_BENCH_SCALE=0.2 for a quick run,
#                                     KVD_BENCH_TLS=1 for TLS,
#                                     KVD_BIN=path to run that kvd binary instead of
#                                     building ./cmd/kvd (A/B runs of two builds)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-3}
SCALE=${KVD_BENCH_SCALE:-1}
TLS=${KVD_BENCH_TLS:-0}
tools=(go redis-server redis-benchmark redis-cli)
if [ "$TLS" = 1 ]; then tools+=(openssl); fi
for tool in "${tools[@]}"; do
  if ! command -v "$tool" >/dev/null; then
    echo "compare.sh: $tool not found; install with: apt-get install redis-server redis-tools" >&2
    exit 1
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-compare.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -n "${KVD_BIN:-}" ]; then
  cp "$KVD_BIN" "$work/kvd"
else
  go build -o "$work/kvd" ./cmd/kvd
fi
go build -o "$work/rawsync" ./bench/rawsync

# With TLS: a CA and a server certificate for 127.0.0.1, and the flags of
# each program.
KVD_TLS=() REDIS_TLS=() CLIENT_TLS=()
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$work/ext.cnf"
  openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
    -days 1 -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
  KVD_TLS=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
  REDIS_TLS=(--tls-cert-file "$work/cert.pem" --tls-key-file "$work/key.pem" --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no)
  CLIENT_TLS=(--tls --cacert "$work/ca.pem")
fi

# free_port picks a port below the kernel's ephemeral range, where no
# client connection (redis-benchmark opens thousands) can be holding it.
free_port() {
  local p lo
  lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

wait_ready() { # port log
  for _ in $(seq 1 200); do
    if [ "$(redis-cli -p "$1" "${CLIENT_TLS[@]}" ping 2>/dev/null)" = "PONG" ]; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "compare.sh: server on port $1 did not answer; its log:" >&2
  cat "$2" >&2
  return 1
}

# start NAME: starts a server, records its port and PID, and pauses it.
declare -A PORT_OF PID_OF
start() {
  local name=$1 dir="$work/$1"
  mkdir -p "$dir"
  PORT=$(free_port)
  local rport=(--port "$PORT")
  if [ "$TLS" = 1 ]; then rport=(--port 0 --tls-port "$PORT" "${REDIS_TLS[@]}"); fi
  case $name in
    kvd-sync)  "$work/kvd" --data-dir "$dir" --listen "127.0.0.1:$PORT" --http-listen "" --commit-mode sync  "${KVD_TLS[@]}" >"$dir.log" 2>&1 & ;;
    kvd-async) "$work/kvd" --data-dir "$dir" --listen "127.0.0.1:$PORT" --http-listen "" --commit-mode async "${KVD_TLS[@]}" >"$dir.log" 2>&1 & ;;
    redis-always)   redis-server "${rport[@]}" --dir "$dir" --save "" --appendonly yes --appendfsync always   >"$dir.log" 2>&1 & ;;
    redis-everysec) redis-server "${rport[@]}" --dir "$dir" --save "" --appendonly yes --appendfsync everysec >"$dir.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  wait_ready "$PORT" "$dir.log"
  PORT_OF[$name]=$PORT PID_OF[$name]=$SERVER_PID
  kill -STOP "$SERVER_PID"
}

# bench TEST CLIENTS PIPELINE N: one redis-benchmark run, prints "rps p50_us p99_us".
bench() {
  local n
  n=$(awk -v n="$4" -v s="$SCALE" 'BEGIN { printf "%d", (n*s < 1000 ? 1000 : n*s) }')
  redis-benchmark -p "$PORT" "${CLIENT_TLS[@]}" -t "$1" -d 100 -r 100000 -c "$2" -P "$3" -n "$n" --csv 2>/dev/null |
    awk -F'","|"' 'NR > 1 && $2 != "" { printf "%s %.0f %.0f\n", $3, $6 * 1000, $8 * 1000 }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Workloads: name test clients pipeline requests (scaled by KVD_BENCH_SCALE).
workloads=(
  "SET_c1     set 1  1  5000"
  "SET_c50    set 50 1  50000"
  "SET_c50_P16 set 50 16 300000"
  "GET_c1     get 1  1  20000"
  "GET_c50    get 50 1  100000"
)

declare -A RES
echo "raw write+fdatasync floor (same filesystem as the servers' data):"
for _ in $(seq 1 "$REPS"); do "$work/rawsync" --dir "$work" --n 3000; done | tee "$work/raw.txt"
RAW_P50=$(sed 's/.*p50_us=\([0-9]*\).*/\1/' "$work/raw.txt" | median)
RAW_OPS=$(sed 's/ops_per_sec=\([0-9]*\).*/\1/' "$work/raw.txt" | median)
echo "raw overwrite+fdatasync (a zero-filled, synced file, as kvd's log keeps its tail):"
for _ in $(seq 1 "$REPS"); do "$work/rawsync" --dir "$work" --n 3000 --overwrite; done | tee "$work/raw-over.txt"
OVER_P50=$(sed 's/.*p50_us=\([0-9]*\).*/\1/' "$work/raw-over.txt" | median)
OVER_OPS=$(sed 's/ops_per_sec=\([0-9]*\).*/\1/' "$work/raw-over.txt" | median)
echo

servers=(kvd-sync redis-always kvd-async redis-everysec)
for server in "${servers[@]}"; do start "$server"; done
for w in "${workloads[@]}"; do
  read -r name test c p n <<<"$w"
  for server in "${servers[@]}"; do : >"$work/runs.$server"; done
  for server in "${servers[@]}"; do
    PORT=${PORT_OF[$server]}
    kill -CONT "${PID_OF[$server]}"
    for _ in $(seq 1 "$REPS"); do bench "$test" "$c" "$p" "$n" >>"$work/runs.$server"; done
    kill -STOP "${PID_OF[$server]}"
  done
  for server in "${servers[@]}"; do
    RES[$server,$name,rps]=$(awk '{ print $1 }' "$work/runs.$server" | median)
    RES[$server,$name,p50]=$(awk '{ print $2 }' "$work/runs.$server" | median)
    RES[$server,$name,p99]=$(awk '{ print $3 }' "$work/runs.$server" | median)
    printf '%-15s %-12s rps=%-9s p50_us=%-7s p99_us=%s\n' "$server" "$name" \
      "${RES[$server,$name,rps]}" "${RES[$server,$name,p50]}" "${RES[$server,$name,p99]}"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
tls_note=""
if [ "$TLS" = 1 ]; then tls_note=" Over TLS (kvd --tls-cert, Redis --tls-port; redis-benchmark --tls)."; fi
echo "Medians of $REPS runs; 100-byte values, 100k random keys; redis-benchmark -d 100 -r 100000.$tls_note"
echo "raw write+fdatasync: ${RAW_OPS} ops/s, p50 ${RAW_P50} µs (overwriting a synced file: ${OVER_OPS} ops/s, p50 ${OVER_P50} µs)"
echo
printf '| %-12s | %-11s | %10s | %8s | %8s | %-14s | %10s | %8s | %12s |\n' workload "kvd mode" "kvd ops/s" "p50 µs" "p99 µs" "Redis" "Redis ops/s" "p50 µs" "kvd/Redis"
printf '|%s|\n' "--------------|-------------|------------|----------|----------|----------------|------------|----------|--------------"
for pair in "kvd-sync redis-always" "kvd-async redis-everysec"; do
  read -r k r <<<"$pair"
  for w in "${workloads[@]}"; do
    read -r name _ <<<"$w"
    printf '| %-12s | %-11s | %10s | %8s | %8s | %-14s | %10s | %8s | %12s |\n' "$name" "${k#kvd-}" \
      "${RES[$k,$name,rps]}" "${RES[$k,$name,p50]}" "${RES[$k,$name,p99]}" "${r#redis-}" \
      "${RES[$r,$name,rps]}" "${RES[$r,$name,p50]}" "$(ratio "${RES[$k,$name,rps]}" "${RES[$r,$name,rps]}")"
  done
done
echo
echo "kvd sync SET c=1 p50 / raw fdatasync p50: $(ratio "${RES[kvd-sync,SET_c1,p50]}" "$RAW_P50")"
