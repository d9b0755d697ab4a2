#!/usr/bin/env bash
# The quick-start demo: prints decisions on the embedded store (Redis when FLOODWALL_REDIS_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p floodwall --example demo
