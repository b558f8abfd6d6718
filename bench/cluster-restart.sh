#!/usr/bin/env bash
# cluster-restart.sh: how soon a cluster node holding 1,000,000 keys serves
# linearizable reads again after a restart (the replication issue's target:
# within 2 s of reaching the leader).
#
# Starts a 3-node cluster (127.0.0.11-13), loads KEYS distinct keys of
# 100-byte values through the leader with redis-cli --pipe, waits until
# every node applied them, then, ROUNDS times, stops a follower (kill -9,
# then SIGTERM on alternate rounds) and starts it again, timing from the
# start of the new process:
#   - up:     its RESP port accepts connections;
#   - leader: it knows the leader (GET /v1/cluster: leader_id);
#   - ready:  GET /readyz answers 200 (it caught up with the leader's
#             commit index and can serve linearizable reads);
#   - read:   a linearizable GET of a key written before the stop answers
#             with its value.
#
# Needs: go, redis-cli, curl. Usage: bench/cluster-restart.sh
# environment: KEYS (default 1000000), ROUNDS (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-4}
work=$(mktemp -d)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/kvd" ./cmd/kvd

now() { date +%s.%N; }
wait_port() { # host port
  for _ in $(seq 2000); do
    (echo > "/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.005
  done
  echo "cluster-restart.sh: nothing listens on $1:$2" >&2
  return 1
}
start() { # i [extra flags]
  local i=$1 ip=127.0.0.1$1
  shift
  "$work/kvd" --data-dir "$work/n$i" --node-id "n$i" --listen "$ip:6379" --http-listen "$ip:8380" \
    --raft-listen "$ip:7000" --commit-mode async "$@" >>"$work/n$i.log" 2>&1 &
  pid[$i]=$!
}
applied() { curl -s "http://127.0.0.1$1:8380/v1/cluster" | grep -o '"applied_revision":[0-9]*' | cut -d: -f2; }

start 1 --bootstrap
wait_port 127.0.0.11 6379
sleep 1.5
start 2 --join 127.0.0.11:7000
start 3 --join 127.0.0.11:7000
wait_port 127.0.0.12 6379
wait_port 127.0.0.13 6379
for _ in $(seq 400); do
  [ "$(redis-cli -h 127.0.0.11 info replication | tr -d '\r' | grep -c '^member[0-9]')" = 3 ] && break
  sleep 0.05
done

value=$(printf 'v%.0s' $(seq 100))
t0=$(now)
awk -v n="$KEYS" -v v="$value" 'BEGIN {
  for (i = 0; i < n; i++) {
    k = sprintf("key:%012d", i)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  }
}' | redis-cli -h 127.0.0.11 --pipe >"$work/pipe.out"
t1=$(now)
tail -1 "$work/pipe.out"
target=$(applied 1)
for i in 2 3; do
  for _ in $(seq 6000); do
    [ "$(applied "$i")" = "$target" ] && break
    sleep 0.05
  done
done
printf 'loaded %d keys in %.1f s; every node at revision %s; n3 data dir %s\n' "$KEYS" \
  "$(echo "$t1 - $t0" | bc)" "$target" "$(du -sh "$work/n3" | cut -f1)"

printf '%-6s %-8s %8s %8s %8s %8s\n' round stop up leader ready read
for r in $(seq "$ROUNDS"); do
  stop=kill-9
  if [ $((r % 2)) = 0 ]; then stop=SIGTERM; fi
  key=$(printf 'key:%012d' $((RANDOM * 30 % KEYS)))
  if [ "$stop" = kill-9 ]; then kill -9 "${pid[3]}"; else kill "${pid[3]}"; fi
  wait "${pid[3]}" 2>/dev/null || true
  # Writes go on while it is down: it has entries to catch up with.
  redis-cli -h 127.0.0.11 set "during-$r" x >/dev/null
  s=$(now)
  start 3
  wait_port 127.0.0.13 6379
  up=$(now)
  for _ in $(seq 4000); do
    curl -s "http://127.0.0.13:8380/v1/cluster" | grep -q '"leader_id":"n' && break
    sleep 0.005
  done
  leader=$(now)
  for _ in $(seq 4000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.13:8380/readyz)" = 200 ] && break
    sleep 0.005
  done
  ready=$(now)
  for _ in $(seq 4000); do
    [ "$(redis-cli -h 127.0.0.13 get "$key" 2>/dev/null)" = "$value" ] && break
    sleep 0.005
  done
  read=$(now)
  printf '%-6s %-8s %8.3f %8.3f %8.3f %8.3f\n' "$r" "$stop" "$(echo "$up - $s" | bc)" "$(echo "$leader - $s" | bc)" \
    "$(echo "$ready - $s" | bc)" "$(echo "$read - $s" | bc)"
done
echo "(seconds from the start of the new process; read: a linearizable GET on the restarted node)"
