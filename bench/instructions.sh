#!/usr/bin/env bash
# Counted instructions per delivery: the server's user-space cost, without
# the noise of a machine whose 2 cores the load generator shares.
#
#   bench/instructions.sh BIN [BIN...]
#   USERS=200 ROOM_SIZE=20 INTERVAL=500 TRANSPORT=long-polling bench/instructions.sh old/halley target/release/halley
#
# Runs each build under valgrind's callgrind (Debian's `valgrind`,
# installed when missing) with a small `halley bench` workload (the
# load generator is the last BIN, run natively), counts the instructions
# the server executes during the measuring window only (`callgrind_control
# -z` when the load generator says "measuring", `-d` when it says
# "draining"), and prints instructions per delivery and the top functions by
# inclusive count. The kernel is not counted (valgrind sees user space
# only): what this measures is the part of the server's cost that is
# Halley's, its libraries' and the allocator's, which is what a change to
# Halley's code can move. Wall-clock figures come from bench/ab.sh.
#
# Output: bench/results/instructions-<time>/<n>-<name>.{out,txt,bench.txt}.
# The workload is small because callgrind runs the server ~50x slower;
# keep it the same across the builds compared.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,20p "$0"; exit 2; }
USERS=${USERS:-200}
ROOM_SIZE=${ROOM_SIZE:-20}
INTERVAL=${INTERVAL:-500}
TRANSPORT=${TRANSPORT:-long-polling}
DURATION=${DURATION:-10s}
TOP=${TOP:-40}
loadgen=${LOADGEN:-${!#}}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
out="bench/results/instructions-$(date -u +%Y-%m-%dT%H%M%S)"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

n=0
for bin in "$@"; do
  n=$((n + 1))
  name="$n-$(basename "$(dirname "$(readlink -f "$bin")")")"
  port=$(free_port)
  RUST_LOG=warn HALLEY_MAX_CONNECTIONS_PER_IP=1000000 HALLEY_HANDSHAKE_RATE_PER_IP=0 \
    valgrind --tool=callgrind --collect-atstart=yes --callgrind-out-file="$out/$name.out" \
    "$bin" serve --listen "127.0.0.1:$port" --admin-listen off 2>"$out/$name.server.log" &
  server=$!
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  : >"$out/$name.bench.txt"
  "$loadgen" bench --url "http://127.0.0.1:$port/cometd" --transport "$TRANSPORT" \
    --users "$USERS" --room-size "$ROOM_SIZE" --interval "$INTERVAL" --duration "$DURATION" \
    --warmup 3s --drain-timeout 30s --json "$out/$name.json" >"$out/$name.bench.txt" 2>&1 &
  bench=$!
  zeroed=0
  while kill -0 "$bench" 2>/dev/null; do
    if [ "$zeroed" = 0 ] && grep -q '^measuring' "$out/$name.bench.txt"; then
      timeout 60 callgrind_control -z "$server" >>"$out/$name.control.log" 2>&1 && zeroed=1
    fi
    if [ "$zeroed" = 1 ] && grep -q '^draining' "$out/$name.bench.txt"; then
      timeout 60 callgrind_control -d "$server" >>"$out/$name.control.log" 2>&1 && zeroed=2
    fi
    sleep 0.05
  done
  kill "$server"; wait "$server" 2>/dev/null || true
  [ "$zeroed" = 2 ] || { echo "$name: the bench never reached its window (see $out/$name.bench.txt)"; continue; }
  # The dump taken at "draining" is the first numbered one.
  dump=$(ls "$out/$name.out".* 2>/dev/null | sort | head -1)
  python3 - "$dump" "$out/$name.json" "$name" <<'PY'
import json, re, sys
dump, report, name = sys.argv[1:]
total = 0
for line in open(dump):
    m = re.match(r"(summary|totals): (\d+)", line)
    if m:
        total = int(m.group(2))
r = json.load(open(report))
delivered = r["delivered"]
print(f"{name}: {total / max(delivered, 1):,.0f} instructions per delivery "
      f"({total:,} over {delivered:,} deliveries; lost {r['lost']})")
PY
  callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null |
    sed -n '/^Ir/,$p' | head -$((TOP + 2)) >"$out/$name.txt" || true
done
echo "inclusive top functions: $out/*.txt"
