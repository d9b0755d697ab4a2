#!/usr/bin/env bash
# The core crate as crates.io would receive it: `cargo package -p floodwall` packs core/ (the Lua
# scripts come in through core/lua, a symlink to the top-level lua/ that cargo follows) and builds
# the packed copy on its own, so a file the crate needs from outside core/ fails here. Then the
# crate without its optional parts: it builds, and pulls no reqwest (that comes with `otlp`).
# Extra arguments go to cargo package (--allow-dirty while iterating). ~30 s with a warm target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo package -p floodwall --locked "$@"
cargo build -p floodwall --no-default-features --locked
if cargo tree -p floodwall --no-default-features -e normal --locked | grep reqwest; then
  echo "check-package: floodwall without default features depends on reqwest" >&2
  exit 1
fi
echo "check-package: ok"
