#!/usr/bin/env bash
# Every test, from a fresh clone: the Rust core against real redis-servers it starts on free ports,
# then the Python and Node suites (each script installs what it needs: venv, npm packages, builds).
# Never touches the shared Redis on 6379.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }

echo "== core (cargo test)"
cargo test --workspace --all-targets

echo "== core as a published crate (cargo package)"
./scripts/check-package.sh

for suite in bindings-python bindings-node; do
  if [ -x "$suite/test.sh" ]; then
    echo "== $suite"
    "$suite/test.sh"
  fi
done
