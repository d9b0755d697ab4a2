#!/usr/bin/env bash
# Every test: the Rust core against real redis-servers it starts itself, then each binding's suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
