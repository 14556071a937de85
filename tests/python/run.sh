#!/usr/bin/env bash
# Runs tests/python/aiocometd_test.py (the PyPI client aiocometd-ng against a release halley)
# in a virtualenv of its own, made on first use and kept (target/python-venv: ignored by git,
# reused until the pinned version changes; PYTHON_VENV=dir to keep it elsewhere).
#
#   cargo build --release -p halley && tests/python/run.sh
#
# Needs python3 with venv (Debian: python3-venv) and PyPI on first use. HALLEY_BIN picks
# another binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
requirement="aiocometd-ng==0.5.6"
venv="${PYTHON_VENV:-$root/target/python-venv}"

# The pin is written into the venv once installed: a changed pin (or a half-made venv) reinstalls.
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$requirement" ]; then
  # Only a directory that is a virtualenv is removed (PYTHON_VENV may point anywhere).
  if [ -e "$venv/pyvenv.cfg" ]; then
    rm -rf "$venv"
  elif [ -e "$venv" ]; then
    echo "$venv exists and is not a virtualenv: remove it or set PYTHON_VENV" >&2
    exit 1
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  echo "$requirement" > "$venv/.installed"
fi
export HALLEY_BIN="${HALLEY_BIN:-$root/target/release/halley}"
exec "$venv/bin/python" tests/python/aiocometd_test.py
