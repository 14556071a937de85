#!/usr/bin/env bash
# Where the server's CPU goes under the seed's workload: one `halley bench`
# run against a release build, the server recorded by `perf record -g`
# during the measured window, then the split of its samples (kernel /
# Halley's own code / allocator / tokio / other) and its top symbols.
#
#   bench/profile.sh                                  # builds target/release/halley
#   BIN=/tmp/old/halley bench/profile.sh              # profile another build
#   USERS=5000 INTERVAL=20 TRANSPORT=websocket DURATION=10s bench/profile.sh
#
# Defaults: WebSocket, 5,000 users in rooms of 200, a burst to 10 rooms
# every 20 ms (~100,000 deliveries/s; raise INTERVAL on a machine that
# cannot keep up: the report's delivered msg/s says what was reached).
# The load generator is the same binary's `halley bench` (LOADGEN to
# change it) and shares the machine's cores with the server.
#
# Output goes to bench/results/profile-<date>/: perf.data, the bench
# report (JSON and text) and the split (split.txt). Needs root or
# kernel.perf_event_paranoid <= 1 to see kernel samples.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-}
USERS=${USERS:-5000}
INTERVAL=${INTERVAL:-20}
TRANSPORT=${TRANSPORT:-websocket}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
FREQ=${FREQ:-999}
TOP=${TOP:-20}
out="bench/results/profile-$(date -u +%Y-%m-%dT%H%M%S)"
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"

if [ -z "$BIN" ]; then
  CARGO_INCREMENTAL=0 cargo build --release -p halley
  BIN=target/release/halley
fi
loadgen=${LOADGEN:-$BIN}

if ! command -v perf >/dev/null 2>&1; then
  echo "perf is missing: installing Debian's linux-perf" >&2
  apt-get install -y linux-perf >&2 || { echo "could not install linux-perf" >&2; exit 1; }
fi
# Hardware counters are often missing in a VM: fall back to the kernel's
# CPU clock, which samples the same way (by time on CPU).
event=cycles
if ! perf record -e cycles -o /dev/null -- true >/dev/null 2>&1; then
  event=cpu-clock
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
seconds() { python3 -c 'import sys; v=sys.argv[1]; print(float(v[:-1])*(60 if v.endswith("m") else 1) if v[-1] in "sm" else float(v))' "$1"; }

port=$(free_port)
RUST_LOG=warn HALLEY_MAX_CONNECTIONS=1000000 HALLEY_MAX_CONNECTIONS_PER_IP=1000000 HALLEY_HANDSHAKE_RATE_PER_IP=0 HALLEY_MAX_SESSIONS=10000000 \
  "$BIN" serve --listen "127.0.0.1:$port" --admin-listen off 2>"$out/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "load: $(uptime)" | tee "$out/uptime.txt"
"$loadgen" bench --url "http://127.0.0.1:$port/cometd" --transport "$TRANSPORT" \
  --users "$USERS" --interval "$INTERVAL" --duration "$DURATION" --warmup "$WARMUP" \
  --server-pid "$server" --json "$out/bench.json" >"$out/bench.txt" 2>&1 &
bench=$!
# The bench connects its users, warms up, then prints `measuring: ...`:
# record the server during the measured window only.
while kill -0 "$bench" 2>/dev/null && ! grep -q "^measuring" "$out/bench.txt" 2>/dev/null; do sleep 0.1; done
perf record -e "$event" -g -F "$FREQ" -p "$server" -o "$out/perf.data" -- sleep "$(seconds "$DURATION")" 2>"$out/perf-record.log" || {
  echo "perf record failed (see $out/perf-record.log): perf may not be allowed in this VM" >&2
}
wait "$bench" || true
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT

python3 - "$out/bench.json" <<'PY' | tee "$out/bench-summary.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"no bench report ({e})"); sys.exit()
q = r["latency_ms"]; cpu = r.get("server_cpu_s")
per = f"{cpu / r['delivered'] * 1e6:.2f} us/delivery" if cpu and r["delivered"] else "?"
print(f"{r['delivered_per_sec']:.0f} msg/s  p50 {q['p50']:.1f}  p99 {q['p99']:.1f} ms  lost {r['lost']}  "
      f"server CPU {cpu:.2f} s ({per})  loadgen CPU {r['loadgen_cpu_s']:.2f} s")
PY

[ -s "$out/perf.data" ] || exit 1
# Self time per symbol (no children): each sample counts once, where it was.
perf report -i "$out/perf.data" --stdio --no-children -g none --sort dso,sym \
  --percent-limit 0 2>/dev/null >"$out/report.txt"
# This VM's perf cannot read Rust's symbol table ("cannot get elf header"):
# addresses it leaves unresolved in the binary are resolved here with nm.
# perf gives them as file offsets; readelf's LOAD segments turn them into
# the addresses nm lists.
nm -C --defined-only "$BIN" 2>/dev/null | grep -i ' [tw] ' >"$out/symbols.txt" || true
readelf -lW "$BIN" | awk '$1 == "LOAD" { print $2, $3, $5 }' >"$out/segments.txt"
python3 - "$out/report.txt" "$TOP" "$out/symbols.txt" "$(basename "$BIN")" "$out/segments.txt" <<'PY' | tee "$out/split.txt"
import bisect, re, sys
segments = [tuple(int(v, 16) for v in raw.split()) for raw in open(sys.argv[5]) if raw.strip()]
def vaddr(offset):
    for off, addr, size in segments:
        if off <= offset < off + size:
            return offset - off + addr
    return offset
addrs, names = [], []
for raw in open(sys.argv[3]):
    parts = raw.rstrip("\n").split(" ", 2)
    if len(parts) == 3:
        addrs.append(int(parts[0], 16)); names.append(parts[2])
order = sorted(range(len(addrs)), key=addrs.__getitem__)
addrs = [addrs[i] for i in order]; names = [names[i] for i in order]
def resolve(dso, sym):
    if dso == sys.argv[4] and re.fullmatch(r"0x[0-9a-f]+", sym) and addrs:
        i = bisect.bisect_right(addrs, vaddr(int(sym, 16))) - 1
        if i >= 0:
            return names[i]
    return sym
# Classify a symbol by the crate it belongs to. Rust symbols are
# demangled as paths (`halley_server::...`, `<tokio::... as ...>::poll`,
# `core::ptr::drop_in_place<halley_server::...>`): the first crate named
# decides, after the std/core/alloc wrappers around it.
line = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")
ALLOC = re.compile(r"(^|[^a-z])(je_|_rjem_|jemalloc|malloc|calloc|realloc|free|sdallocx|mallocx|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc::)")
WRAPPERS = ("core::", "alloc::", "std::", "<core::", "<alloc::", "<std::", "<&")
def crate_of(sym):
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)::", sym):
        name = m.group(1)
        if name in ("core", "alloc", "std", "ptr", "impl", "fmt"):
            continue
        return name
    return None
def classify(dso, level, sym):
    if level == "k" or dso.startswith("[kernel"):
        return "kernel"
    if ALLOC.search(sym) or "jemalloc" in dso:
        return "allocator"
    crate = crate_of(sym)
    if crate and crate.startswith("halley"):
        return "halley"
    if crate == "tokio":
        return "tokio"
    return "other"
rows, split = [], {}
for raw in open(sys.argv[1]):
    m = line.match(raw)
    if not m:
        continue
    pct, dso, level, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
    sym = resolve(dso, sym)
    kind = classify(dso, level, sym)
    split[kind] = split.get(kind, 0.0) + pct
    rows.append((pct, kind, sym))
# Rows of one symbol (several unresolved addresses in it) count together.
merged = {}
for pct, kind, sym in rows:
    merged[(kind, sym)] = merged.get((kind, sym), 0.0) + pct
rows = [(pct, kind, sym) for (kind, sym), pct in merged.items()]
total = sum(split.values()) or 1.0
print("split of the server's samples (self time):")
for kind in ("kernel", "halley", "allocator", "tokio", "other"):
    print(f"  {kind:10} {split.get(kind, 0.0) / total * 100:5.1f}%")
print(f"  {'user space':10} {(total - split.get('kernel', 0.0)) / total * 100:5.1f}%  (everything but the kernel)")
top = int(sys.argv[2])
print(f"top {top} symbols:")
for pct, kind, sym in sorted(rows, reverse=True)[:top]:
    print(f"  {pct / total * 100:5.2f}%  {kind:9}  {sym[:150]}")
PY
echo "profile in $out (perf report -i $out/perf.data for more)"
