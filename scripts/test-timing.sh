#!/usr/bin/env bash
# Tests whose outcome depends on this machine's speed (what the default deadline and breaker do
# under a burst): outside scripts/test.sh so that a loaded machine cannot fail the suite; CI runs both.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
cargo test -p floodwall --test timing -- --ignored
