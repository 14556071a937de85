#!/usr/bin/env bash
# Runs every test Halley has, installing what they need first.
#
#   ./scripts/test.sh
#
# Steps: system packages (Node.js/npm, Chromium, Python 3, redis-server, openssl and haproxy when missing), formatting
# and lints, Rust unit/property/end-to-end tests, a short run of every fuzz target, the interop suite with the
# real CometD and Faye clients from npm against a release build of `halley`
# (and the Python example remote adapter, examples/price_feed.py), the Python client aiocometd-ng from PyPI,
# then the browser suite: halley.js and the chat demo in Debian's Chromium.
# Safe to run on a fresh Debian machine as root, and as CI's `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

apt_updated=0
need_apt() {
  # need_apt <command> <package>: installs <package> when <command> is missing.
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

step "system packages"
need_apt node nodejs
need_apt npm npm
need_apt chromium chromium
need_apt python3 python3
# tests/python/run.sh makes a virtualenv for aiocometd-ng: Debian's python3 needs python3-venv for
# that (without it, `import ensurepip` may work while `python3 -m venv` fails).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ||
  { [ "$(command -v python3)" = /usr/bin/python3 ] && command -v dpkg >/dev/null &&
    ! dpkg -s python3-venv >/dev/null 2>&1; }; then
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
# The cluster tests (crates/halley/tests/cluster.rs) start their own.
need_apt redis-server redis-server
# The TLS interop test (tests/interop/tls.test.mjs) makes its self-signed certificate with it.
need_apt openssl openssl
# The cluster through a load balancer (tests/interop/cluster.test.mjs) runs haproxy. Under CI a
# missing haproxy fails that test file; elsewhere it skips, saying so.
if [ -n "${CI:-}" ]; then
  need_apt haproxy haproxy
else
  need_apt haproxy haproxy || echo "haproxy could not be installed: tests/interop/cluster.test.mjs will skip"
fi
node --version

# A CI run builds once from cold: incremental state would only add gigabytes to the target directory.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (protocol, engine, client, end to end)"
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
grep -q "test result: ok" target/cargo-test.log

step "fuzz: every target for a few seconds (scripts/fuzz.sh; installs cargo-fuzz when missing)"
# Cold (cargo-fuzz installed, the instrumented build): minutes; the crash
# an input causes is left in fuzz/artifacts/. Long runs: scripts/fuzz.sh 600.
need_apt c++ g++
./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

step "release build for the interop suite"
cargo build --release --quiet -p halley
export HALLEY_BIN="$root/target/release/halley"

step "interop: official CometD and Faye clients from npm"
cd "$root/tests/interop"
npm ci --no-audit --no-fund --loglevel=error
npm test

step "interop: the Python client aiocometd-ng from PyPI (tests/python/run.sh; virtualenv kept in target/python-venv)"
cd "$root"
tests/python/run.sh

step "browser: the chat demo and halley.js in Chromium, halley.js against Faye, client unit tests"
cd "$root/tests/browser"
npm ci --no-audit --no-fund --loglevel=error
npm test

printf '\n==> all tests passed\n'
