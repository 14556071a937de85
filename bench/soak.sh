#!/usr/bin/env bash
# Soak: one release Halley node under a steady, modest load for MINUTES
# minutes (default 30), with a share of the users cutting their connection
# abruptly every period and reconnecting as a CometD client does; the
# server's RSS, open files and sessions and the users' delivered msg/s and
# latency are sampled all along, then the growth is printed: RSS and open
# files 5 minutes in against the end (what grows after the first minutes is
# a leak or a backlog, not warm-up).
#
#   bench/soak.sh            # 30 minutes
#   bench/soak.sh 60
#   USERS=4000 INTERVAL=250 CUT_EVERY=30s CUT_FRACTION=0.2 bench/soak.sh 10
#
# Settings (environment): USERS (2000), TRANSPORT (mixed: every other user
# on WebSocket, the others long-polling), INTERVAL ms between bursts (500:
# bursts to 10 rooms of 200 = 4,000 deliveries/s), CUT_EVERY (60s),
# CUT_FRACTION (0.1), SAMPLE_EVERY (5s), WARMUP (30s), OUT
# (bench/results/soak-<time>), HALLEY (a halley binary; default: build
# target/release/halley), EXTRA (more `halley bench` arguments, e.g.
# "--ack").
#
# Output in OUT: report.json (the report, series included), soak.csv,
# soak.json and soak.svg (the series and its chart), soak.txt (the
# summary), node.log. The load generator shares the machine's cores with
# the node.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
USERS=${USERS:-2000}
TRANSPORT=${TRANSPORT:-mixed}
INTERVAL=${INTERVAL:-500}
CUT_EVERY=${CUT_EVERY:-60s}
CUT_FRACTION=${CUT_FRACTION:-0.1}
SAMPLE_EVERY=${SAMPLE_EVERY:-5s}
WARMUP=${WARMUP:-30s}
OUT=${OUT:-bench/results/soak-$(date -u +%Y-%m-%dT%H%M)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

if [ -z "${HALLEY:-}" ]; then
  CARGO_INCREMENTAL=0 cargo build --release --quiet -p halley
  HALLEY=target/release/halley
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)

# The users all come from this machine: the per-IP limits are lifted (the
# defaults stay safe for the public internet, see docs/security.md).
RUST_LOG=warn HALLEY_MAX_CONNECTIONS_PER_IP=1000000 HALLEY_HANDSHAKE_RATE_PER_IP=0 \
  "$HALLEY" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  >"$OUT/node.log" 2>&1 &
node=$!
trap 'kill -INT "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== soak: $MINUTES min, $USERS users ($TRANSPORT), burst every $INTERVAL ms," \
  "$CUT_FRACTION of the users cut every $CUT_EVERY; $(nproc) cores, $(uptime | sed 's/.*load/load/')"
status=0
# shellcheck disable=SC2086 # EXTRA is a list of arguments
"$HALLEY" bench --url "http://127.0.0.1:$port/cometd" --transport "$TRANSPORT" \
  --users "$USERS" --interval "$INTERVAL" --warmup "$WARMUP" --duration "${MINUTES}m" \
  --cut-every "$CUT_EVERY" --cut-fraction "$CUT_FRACTION" --sample-every "$SAMPLE_EVERY" \
  --server-pid "$node" --admin-url "http://127.0.0.1:$admin" --drain-timeout 30s \
  --json "$OUT/report.json" --series "$OUT/soak" ${EXTRA:-} | tee "$OUT/soak.txt" || status=$?
echo "after the run: $(uptime | sed 's/.*load/load/')"

python3 - "$OUT/soak.csv" <<'PY'
# Growth: the median of the fifth minute against the median of the last
# minute (a single row may fall on a cut, while sockets are replaced).
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if not rows:
    sys.exit("no series")
end = float(rows[-1]["t_s"])
early = [r for r in rows if 300 <= float(r["t_s"]) < 360] or rows[:12]
late = [r for r in rows if float(r["t_s"]) > end - 60]
def show(name, key, scale=1, unit=""):
    a = [float(r[key]) / scale for r in early if r[key]]
    b = [float(r[key]) / scale for r in late if r[key]]
    if not a or not b:
        return
    a, b = statistics.median(a), statistics.median(b)
    print(f"{name}: {a:.1f}{unit} at {float(early[0]['t_s']):.0f} s, {b:.1f}{unit} at the end "
          f"({end:.0f} s): {b - a:+.1f}{unit} ({(b - a) * 100 / a:+.1f}%), medians over a minute")
show("server RSS", "server_rss_bytes", 1048576, " MiB")
show("server open fds", "server_fds")
show("sessions", "sessions")
rss = [float(r["server_rss_bytes"]) / 1048576 for r in rows if r["server_rss_bytes"]]
print(f"server RSS over the run: min {min(rss):.1f} MiB, max {max(rss):.1f} MiB")
p99 = sorted(float(r["p99_ms"]) for r in rows)
print(f"per-interval p99: median {statistics.median(p99):.1f} ms, worst {p99[-1]:.1f} ms")
PY
echo "series: $OUT/soak.csv, $OUT/soak.svg; report: $OUT/report.json"
exit "$status"
