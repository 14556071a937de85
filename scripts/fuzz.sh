#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) and runs each for a while, one after the
# other. Exits non-zero when one finds a crash; libFuzzer leaves the input
# that crashed it in fuzz/artifacts/<target>/ (replay: see docs/security.md,
# "Fuzzing").
#
#   ./scripts/fuzz.sh [seconds per target, default 60] [target...]
#
# cargo-fuzz needs nightly-only rustc flags; on the stable toolchain,
# RUSTC_BOOTSTRAP=1 allows them. `--sanitizer none`: AddressSanitizer would
# need nightly's sanitizer runtime, and the code fuzzed has no `unsafe`.
# New inputs the fuzzer finds go to fuzz/target/corpus/<target>/ (kept
# between runs, never committed); the seeds in fuzz/corpus/<target>/ are
# only read. A log per target is in fuzz/target/logs/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(batch channel callback_polling websocket adapter http1)

export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz
fi
# libFuzzer's runtime is C++ (built by libfuzzer-sys).
command -v c++ >/dev/null || { echo "fuzz.sh: needs a C++ compiler (Debian: g++)" >&2; exit 1; }

echo "==> building the fuzz targets"
cargo fuzz build --sanitizer none

mkdir -p target/logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target"
  log="target/logs/$target.log"
  # Bayeux's words (fuzz/bayeux.dict) for the targets that speak it.
  dict=()
  case $target in batch | callback_polling | websocket) dict=(-dict=bayeux.dict) ;; esac
  # -timeout: one input taking this long is a hang, reported like a crash.
  if cargo fuzz run --sanitizer none "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    printf '%-18s ok: %s in %ss\n' "$target" "${runs:-?}" "$seconds"
  else
    printf '%-18s FAILED: see fuzz/%s and fuzz/artifacts/%s/\n' "$target" "$log" "$target"
    grep -E 'panicked|ERROR|Test unit written|Base64' "$log" | head -20 || true
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
