#!/usr/bin/env bash
# The seed's workload through a Halley cluster on this machine, in one
# command: a redis-server of its own (free port, no persistence), NODES
# release `halley serve --redis` nodes on free ports, `halley bench` against
# all of them at once (user i on node i mod NODES; each node's and Redis's
# CPU in the report), then everything is stopped.
#
#   bench/cluster.sh                                  # defaults below
#   NODES=3 USERS=50000 INTERVAL=100 bench/cluster.sh
#   bench/cluster.sh --nodes 2 --users 20000 --transport long-polling --label lp-20k
#   NODES=1 REDIS=off bench/cluster.sh                # one node in memory (the Redis hop's baseline)
#
# Settings (environment or the matching --flag): NODES (2), USERS (20000),
# TRANSPORT (websocket), INTERVAL ms (100), DURATION (10s), WARMUP (2s),
# DRAIN_TIMEOUT (10s), REDIS (on|off: off needs NODES=1), LABEL (a name for
# the report files), OUT (bench/results/cluster-<date>), HALLEY (a halley
# binary; default: build target/release/halley), EXTRA (more `halley bench`
# arguments, e.g. "--ack").
#
# One process may open at most `ulimit -Hn` files (20,000 here): a node holds
# one connection per user on it, so NODES must be at least USERS / 19,000.
# Nodes, Redis and the load generator share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."

while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2 ;;
    --users) USERS=$2 ;;
    --transport) TRANSPORT=$2 ;;
    --interval) INTERVAL=$2 ;;
    --duration) DURATION=$2 ;;
    --warmup) WARMUP=$2 ;;
    --drain-timeout) DRAIN_TIMEOUT=$2 ;;
    --redis) REDIS=$2 ;;
    --label) LABEL=$2 ;;
    --out) OUT=$2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
NODES=${NODES:-2}
USERS=${USERS:-20000}
TRANSPORT=${TRANSPORT:-websocket}
INTERVAL=${INTERVAL:-100}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-10s}
REDIS=${REDIS:-on}
LABEL=${LABEL:-$TRANSPORT-$USERS-${NODES}n-$REDIS-$INTERVAL}
OUT=${OUT:-bench/results/cluster-$(date -u +%Y-%m-%d)}
EXTRA=${EXTRA:-}

if [ -z "${HALLEY:-}" ]; then
  cargo build --release --quiet -p halley
  HALLEY=target/release/halley
fi
ulimit -n "$(ulimit -Hn)"
per_node=$(((USERS + NODES - 1) / NODES))
if [ "$per_node" -gt $(($(ulimit -n) - 1000)) ]; then
  echo "$USERS users over $NODES node(s) is $per_node per node: more than one process's" \
    "$(ulimit -n) files allow (keep ~1,000 spare); add nodes" >&2
  exit 2
fi
if [ "$REDIS" = off ] && [ "$NODES" != 1 ]; then
  echo "REDIS=off is one node in memory: nodes without Redis do not share channels" >&2
  exit 2
fi
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
redis_child=
stop_all() {
  # Nodes first, then Redis: a node that loses Redis while stopping only
  # fills its log with failed session writes.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$redis_child" ]; then kill "$redis_child" 2>/dev/null || true; wait "$redis_child" 2>/dev/null || true; fi
}
trap stop_all EXIT

wait_for() { # wait_for FILE PATTERN WHAT
  for _ in $(seq 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$3 did not start: see $1" >&2
  exit 1
}

redis_args=()
redis_pid=()
if [ "$REDIS" != off ]; then
  redis_port=$(free_port)
  # No persistence: the figures are of the hop, not of the disk.
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$OUT/$LABEL-redis.log" 2>&1 &
  redis_child=$!
  redis_pid=(--redis-pid "$redis_child")
  wait_for "$OUT/$LABEL-redis.log" "Ready to accept connections" "redis-server"
  redis_args=(--redis "redis://127.0.0.1:$redis_port")
fi

urls=()
server_pids=()
for i in $(seq "$NODES"); do
  port=$(free_port)
  log="$OUT/$LABEL-node$i.log"
  # Stopped with SIGTERM at the end: at once, no drain. The load comes
  # from one machine's addresses: the per-IP limits are lifted (the
  # defaults stay safe, see docs/security.md).
  RUST_LOG=warn,halley_server::server=info HALLEY_MAX_CONNECTIONS=1000000 HALLEY_MAX_CONNECTIONS_PER_IP=1000000 \
    HALLEY_HANDSHAKE_RATE_PER_IP=0 HALLEY_MAX_SESSIONS=10000000 "$HALLEY" serve --listen "127.0.0.1:$port" \
    "${redis_args[@]}" --node-id "bench-$i" --admin-listen 127.0.0.1:0 \
    --drain-delay 0 --drain-timeout 0 >"$log" 2>&1 &
  pids+=($!)
  server_pids+=(--server-pid $!)
  urls+=(--url "http://127.0.0.1:$port/cometd")
  wait_for "$log" "listening on" "node $i"
done

echo "== $LABEL: $USERS users over $TRANSPORT, $NODES node(s), Redis $REDIS, interval $INTERVAL ms ($(uptime | sed 's/.*load/load/'))"
status=0
# shellcheck disable=SC2086 # EXTRA is a list of arguments
"$HALLEY" bench "${urls[@]}" "${server_pids[@]}" "${redis_pid[@]}" \
  --transport "$TRANSPORT" --users "$USERS" --interval "$INTERVAL" \
  --duration "$DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN_TIMEOUT" \
  --json "$OUT/$LABEL.json" $EXTRA || status=$?
echo "report: $OUT/$LABEL.json (logs: $OUT/$LABEL-*.log); after the run: $(uptime | sed 's/.*load/load/')"
exit "$status"
