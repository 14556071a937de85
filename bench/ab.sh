#!/usr/bin/env bash
# Two Halley builds side by side in one sitting: the same `halley bench`
# workload against each, alternately (A B A B ...), with the same load
# generator for both, so a change to the server is measured on its own.
#
#   bench/ab.sh BEFORE_BIN AFTER_BIN            # defaults below
#   ROUNDS=3 USERS=5000 INTERVAL=50 TRANSPORTS="websocket" bench/ab.sh old/halley target/release/halley
#
# The load generator is AFTER_BIN's `halley bench` unless LOADGEN is set.
# JSON reports go to bench/results/ab-<date>/<transport>-<label>-<round>.json;
# one summary line per run goes to stdout. The load generator shares the
# machine's cores with the server under test.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench/ab.sh BEFORE_BIN AFTER_BIN}
after=${2:?usage: bench/ab.sh BEFORE_BIN AFTER_BIN}
loadgen=${LOADGEN:-$after}
ROUNDS=${ROUNDS:-2}
USERS=${USERS:-5000}
INTERVAL=${INTERVAL:-50}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
TRANSPORTS=${TRANSPORTS:-websocket long-polling}
out="bench/results/ab-$(date -u +%Y-%m-%dT%H%M%S)"
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # run LABEL BIN TRANSPORT ROUND
  local port log pid
  port=$(free_port)
  log="$out/$3-$1-$4.log"
  # Every user comes from 127.0.0.1: lift the per-IP and total caps (as
  # environment variables, which a build without them ignores).
  RUST_LOG=warn HALLEY_MAX_CONNECTIONS=1000000 HALLEY_MAX_CONNECTIONS_PER_IP=1000000 HALLEY_HANDSHAKE_RATE_PER_IP=0 HALLEY_MAX_SESSIONS=10000000 \
    "$2" serve --listen "127.0.0.1:$port" --admin-listen off 2>"$log" &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$loadgen" bench --url "http://127.0.0.1:$port/cometd" --transport "$3" \
    --users "$USERS" --interval "$INTERVAL" --duration "$DURATION" --warmup "$WARMUP" \
    --server-pid "$pid" --json "$out/$3-$1-$4.json" >"$out/$3-$1-$4.txt" 2>&1 || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out/$3-$1-$4.json" "$1" "$3" "$4" <<'PY'
import json, sys
path, label, transport, rnd = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{transport:13} {label:6} round {rnd}: no report ({e})"); sys.exit()
q = r["latency_ms"]
cpu = r.get("server_cpu_s")
per = f"{cpu / r['delivered'] * 1e6:.2f}" if cpu and r["delivered"] else "?"
rss = r.get("server_rss_per_client_bytes")
rss = f"{rss / 1024:.1f} KiB/client" if rss else "?"
print(f"{transport:13} {label:6} round {rnd}: {r['delivered_per_sec']:>8.0f} msg/s  "
      f"p50 {q['p50']:7.1f}  p99 {q['p99']:7.1f}  p99.9 {q['p999']:7.1f}  max {q['max']:7.1f} ms  "
      f"lost {r['lost']}  server CPU {cpu:.2f} s ({per} us/delivery, {rss})  loadgen CPU {r['loadgen_cpu_s']:.2f} s")
PY
}

for transport in $TRANSPORTS; do
  for round in $(seq "$ROUNDS"); do
    run before "$before" "$transport" "$round"
    run after "$after" "$transport" "$round"
  done
done
echo "reports in $out"
