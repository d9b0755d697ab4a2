#!/usr/bin/env bash
# The formatters and linters CI runs, in check mode: rustfmt, clippy (warnings denied), ruff, Biome, versions.
# `scripts/lint.sh --fix` first applies the formatters and the tools' safe fixes, then checks what is left.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned here (ruff) and in bindings-node/package.json (Biome), so that a release's new rules come in a
# commit of their own.
RUFF_VERSION=0.17.6

fix=false
case "${1:-}" in
  "") ;;
  --fix) fix=true ;;
  *) echo "usage: scripts/lint.sh [--fix]" >&2; exit 2 ;;
esac

# Tools, installed when missing, as the test scripts do: ruff into .venv, Biome through `npm ci`.
command -v cargo >/dev/null || { echo "lint: cargo is required" >&2; exit 1; }
command -v node >/dev/null || { echo "lint: node is required (for Biome)" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ "$(.venv/bin/ruff --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]; then
  .venv/bin/python -m pip install --quiet "ruff==$RUFF_VERSION"
fi
biome=bindings-node/node_modules/.bin/biome
biome_pin=$(node -p "require('./bindings-node/package.json').devDependencies['@biomejs/biome']")
if [ "$("$biome" --version 2>/dev/null)" != "Version: $biome_pin" ]; then
  (cd bindings-node && npm ci --no-audit --no-fund --loglevel=error)
fi
colors=()
[ -t 1 ] || colors=(--colors=off)

if $fix; then
  echo "== fix: cargo clippy --fix, cargo fmt, ruff check --fix, ruff format, biome check --write"
  # A fixer that stops on what it cannot fix leaves it to the checks below, which report it.
  cargo clippy --fix --allow-dirty --allow-staged --workspace --all-targets --quiet || true
  cargo fmt --all
  .venv/bin/ruff check --fix --quiet || true
  .venv/bin/ruff format --quiet
  "$biome" check --write "${colors[@]}" >/dev/null 2>&1 || true
fi

# `biome ci` fails on errors, and with --error-on-warnings on warnings; its "info" findings (such as
# style/useTemplate) only print, so they are counted from its closing line.
biome_ci() {
  local out
  out=$(mktemp)
  local rc=0
  "$biome" ci --error-on-warnings "${colors[@]}" 2>&1 | tee "$out" || rc=$?
  if grep -Eq '^Found [0-9]+ infos?\.' "$out"; then rc=1; fi
  rm -f "$out"
  return $rc
}

failed=()
check() {
  local name=$1
  shift
  echo "== $name"
  "$@" || failed+=("$name")
}
check "cargo fmt" cargo fmt --all --check
check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
check "ruff check" .venv/bin/ruff check
check "ruff format" .venv/bin/ruff format --check
check "biome" biome_ci
check "versions" scripts/check-versions.sh

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: failed: ${failed[*]}. scripts/lint.sh --fix applies the formatters and safe fixes." >&2
  exit 1
fi
echo "lint: all checks passed"
