#!/usr/bin/env bash
# The Python package's suite, from a fresh clone or again: makes .venv at the repository root if
# missing, installs the package the way users do (`pip install .`, a release build through
# maturin) but with the native module's test switches (cargo feature test-hooks, src/test_hooks.rs)
# and its test extras, then runs pytest against real redis-servers the tests start on free ports.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || { echo "bindings-python/test.sh: redis-server is not installed" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
start=$(date +%s)
MATURIN_PEP517_ARGS="--features test-hooks" .venv/bin/python -m pip install --quiet ".[test]"
echo "bindings-python: pip install . took $(( $(date +%s) - start )) s"
.venv/bin/python -m pytest -p no:cacheprovider bindings-python/tests "$@"
