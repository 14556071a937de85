#!/usr/bin/env bash
# Halley beside Faye on this machine, in one run: for each server and each
# transport, `halley bench sweep` over the user counts and intervals below,
# with the server's PID so its CPU and memory are reported.
#
#   bench/compare.sh                     # defaults below
#   USERS=1000,5000 INTERVALS=100,20 DURATION=10s bench/compare.sh
#   FAYE_USERS=1000,5000 bench/compare.sh   # fewer users for a peer that cannot hold more
#
# Results (JSON per sweep, SVG charts) go to bench/results/<date>/.
# The load generator runs on the same cores as the server under test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

USERS=${USERS:-1000,5000,10000,19000}
FAYE_USERS=${FAYE_USERS:-$USERS}
INTERVALS=${INTERVALS:-200,100,50,20}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
TRANSPORTS=${TRANSPORTS:-long-polling websocket}
SERVERS=${SERVERS:-halley faye}
out="bench/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"

cargo build --release --quiet -p halley
halley="$root/target/release/halley"
(cd bench && npm ci --no-audit --no-fund --loglevel=error)
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # start_server NAME PORT -> sets server_pid
  case "$1" in
    # Stopped with SIGTERM between runs: at once, no drain. Every user comes
    # from 127.0.0.1: lift the per-IP and total caps.
    halley) RUST_LOG=info HALLEY_MAX_CONNECTIONS=1000000 HALLEY_MAX_CONNECTIONS_PER_IP=1000000 HALLEY_HANDSHAKE_RATE_PER_IP=0 HALLEY_MAX_SESSIONS=10000000 \
      "$halley" serve --listen "127.0.0.1:$2" --admin-listen off --drain-delay 0 --drain-timeout 0 \
      2>"$out/$1.log" & ;;
    faye) node bench/faye-server.mjs "$2" 2>"$out/$1.log" & ;;
  esac
  server_pid=$!
  # Ready when it says where it listens (Faye answers nothing outside its mount).
  for _ in $(seq 100); do
    grep -q "listening on" "$out/$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2; exit 1
}

for server in $SERVERS; do
  for transport in $TRANSPORTS; do
    port=$(free_port)
    start_server "$server" "$port"
    echo "== $server over $transport (pid $server_pid, port $port)"
    users=$USERS; [ "$server" = faye ] && users=$FAYE_USERS
    "$halley" bench sweep --url "http://127.0.0.1:$port/cometd" --transport "$transport" \
      --users "$users" --intervals "$INTERVALS" --duration "$DURATION" --warmup "$WARMUP" \
      --server-pid "$server_pid" --json "$out/$server-$transport.json" --chart "$out/$server-$transport.svg" \
      || echo "sweep of $server over $transport failed" >&2
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  done
done
echo "results in $out"
