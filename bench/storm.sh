#!/usr/bin/env bash
# Reconnect storm: 19,000 WebSocket clients on one release Halley node,
# then the node goes away and comes back on the same port, and every client
# must come back by itself (its connect loop: back off with jitter, connect,
# handshake again when the new node does not know its session, as the
# server advises, subscribe again).
#
#   bench/storm.sh              # both: SIGTERM (drain) and SIGKILL
#   bench/storm.sh sigterm      # the node drains (docs/operations.md), exits, restarts
#   bench/storm.sh sigkill      # the node dies at once, restarts
#
# The node keeps its safety limits at their defaults (docs/security.md):
# 1,000 connections and 50 handshakes a second per client address, the
# handshake refused beyond that with advice to retry after a random 1 to
# 5 s. The clients come from WORKERS addresses (127.x.y.z, one per worker
# process of `halley bench`), 950 each by default, as from 20 NATs. Only
# max-connections is raised, from 19,000 to 19,500, for the publisher and
# the admin probes next to 19,000 users (20,000 files per process here).
#
# Settings (environment): USERS (19000), WORKERS (20), WINDOW (120s of
# measuring; the node is stopped KILL_AFTER (20) s into it), INTERVAL ms
# between bursts (1000: a burst to 10 rooms of 200, 2,000 deliveries/s),
# OUT (bench/results/storm-<time>), HALLEY (a halley binary; default:
# build target/release/halley).
#
# Per mode, in OUT: MODE.csv / MODE.json / MODE.svg (the clients' series,
# every second: users connected and handshaken again, sessions on the node),
# MODE-node.csv (the node's pid, RSS and open files every 0.5 s),
# MODE-report.json, MODE.txt, MODE-node1.log and MODE-node2.log; and a
# summary on stdout: users back, time until all were back, handshakes again
# per second, the new node's peak RSS (VmHWM) and open files, errors.
set -euo pipefail
cd "$(dirname "$0")/.."
MODES=${1:-both}
[ "$MODES" = both ] && MODES="sigterm sigkill"
USERS=${USERS:-19000}
WORKERS=${WORKERS:-20}
WINDOW=${WINDOW:-120s}
KILL_AFTER=${KILL_AFTER:-20}
INTERVAL=${INTERVAL:-1000}
OUT=${OUT:-bench/results/storm-$(date -u +%Y-%m-%dT%H%M)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

if [ -z "${HALLEY:-}" ]; then
  CARGO_INCREMENTAL=0 cargo build --release --quiet -p halley
  HALLEY=target/release/halley
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_node() { # start_node LOG: starts the node on $port/$admin, sets $node
  RUST_LOG=warn HALLEY_MAX_CONNECTIONS=19500 \
    "$HALLEY" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$1" 2>&1 &
  node=$!
  echo "$node" >"$OUT/.node.pid"
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the node did not start: see $1" >&2
  exit 1
}

storm() { # storm MODE
  local mode=$1 bench sampler signal
  port=$(free_port)
  admin=$(free_port)
  start_node "$OUT/$mode-node1.log"
  # The node's RSS and open files every 0.5 s, whichever node runs: a
  # script-side loop, since the node's pid changes at the restart.
  (
    echo "t,pid,rss_kib,fds"
    while [ -f "$OUT/.node.pid" ]; do
      pid=$(cat "$OUT/.node.pid")
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      # The node may be gone between two reads (killed, restarting): a
      # failed read must not end the loop.
      fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
      [ -n "$rss" ] && echo "$(date +%s.%N),$pid,$rss,$fds"
      sleep 0.5
    done
  ) >"$OUT/$mode-node.csv" 2>/dev/null &
  sampler=$!

  echo "== storm ($mode): $USERS websocket users from $WORKERS addresses; $(nproc) cores, $(uptime | sed 's/.*load/load/')"
  "$HALLEY" bench --url "http://127.0.0.1:$port/cometd" --transport websocket \
    --users "$USERS" --processes "$WORKERS" --connecting-at-once 64 --publishers 1 \
    --interval "$INTERVAL" --warmup 2s --duration "$WINDOW" --drain-timeout 5s \
    --sample-every 1s --admin-url "http://127.0.0.1:$admin" \
    --json "$OUT/$mode-report.json" --series "$OUT/$mode" \
    >"$OUT/$mode.txt" 2>"$OUT/$mode-bench.log" &
  bench=$!
  until grep -q '^measuring' "$OUT/$mode-bench.log" 2>/dev/null; do
    kill -0 "$bench" 2>/dev/null || { cat "$OUT/$mode-bench.log" >&2; exit 1; }
    sleep 0.2
  done
  sleep "$KILL_AFTER"
  signal=TERM
  [ "$mode" = sigkill ] && signal=KILL
  local old=$node
  echo "stopped_at,$(date +%s.%N),$signal" >"$OUT/$mode-events.csv"
  kill -s "$signal" "$old"
  wait "$old" 2>/dev/null || true
  echo "exited_at,$(date +%s.%N)" >>"$OUT/$mode-events.csv"
  start_node "$OUT/$mode-node2.log"
  echo "restarted_at,$(date +%s.%N)" >>"$OUT/$mode-events.csv"
  wait "$bench" || true
  local hwm
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$node/status")
  echo "new_node_vmhwm_kib,$hwm" >>"$OUT/$mode-events.csv"
  rm -f "$OUT/.node.pid"
  wait "$sampler" 2>/dev/null || true
  kill -INT "$node"
  wait "$node" 2>/dev/null || true

  python3 - "$OUT" "$mode" "$USERS" <<'PY'
import csv, json, sys
out, mode, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = json.load(open(f"{out}/{mode}-report.json"))
events = {row[0]: row[1:] for row in csv.reader(open(f"{out}/{mode}-events.csv"))}
t0 = report["window_from_unix_s"]
stopped = float(events["stopped_at"][0]) - t0
exited = float(events["exited_at"][0]) - t0
restarted = float(events["restarted_at"][0]) - t0
rows = list(csv.DictReader(open(f"{out}/{mode}.csv")))
back = next((r for r in rows if int(r["rehandshaken"]) >= users and int(r["connected"]) >= users), None)
last = rows[-1]
print(f"{mode}: node stopped at {stopped:.1f} s into the window, exited {exited - stopped:.1f} s later, "
      f"restarted and ready {restarted - exited:.2f} s after that")
print(f"  users back (handshaken again, connected) at the end: {last['rehandshaken']} and {last['connected']} of {users}")
if back:
    print(f"  all back {float(back['t_s']) - stopped:.0f} s after the signal, "
          f"{float(back['t_s']) - restarted:.0f} s after the restart")
else:
    print("  NOT ALL BACK by the end of the window")
hist, before = [], 0
for r in rows:
    n = int(r["rehandshaken"])
    if n > before:
        hist.append((float(r["t_s"]) - restarted, n - before))
    before = n
if hist:
    peak = max(hist, key=lambda h: h[1])
    print(f"  handshakes again per second (s after the restart: count): "
          + "  ".join(f"{t:.0f}:{n}" for t, n in hist))
    print(f"  spread over {hist[-1][0] - hist[0][0] + 1:.0f} s, peak {peak[1]}/s at {peak[0]:.0f} s")
sessions = [int(r["sessions"]) for r in rows if r["sessions"]]
if sessions:
    print(f"  sessions on the node at the end: {sessions[-1]} (peak {max(sessions)})")
node = list(csv.DictReader(open(f"{out}/{mode}-node.csv")))
pids = list(dict.fromkeys(r["pid"] for r in node))
for label, pid in zip(["first node", "new node"], pids):
    mine = [r for r in node if r["pid"] == pid]
    print(f"  {label}: peak RSS {max(int(r['rss_kib']) for r in mine) / 1024:.1f} MiB, "
          f"peak open files {max(int(r['fds']) for r in mine)}")
print(f"  new node VmHWM (peak RSS): {int(events['new_node_vmhwm_kib'][0]) / 1024:.1f} MiB")
print(f"  errors {report['errors']}, lost {report['lost']} of {report['expected']} deliveries "
      f"(messages published while sessions were gone), connect retries {report['connect_retries']}, "
      f"re-handshakes {report['rehandshakes']}")
PY
}

for mode in $MODES; do
  storm "$mode"
done
echo "files: $OUT"
