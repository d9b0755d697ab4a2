#!/usr/bin/env bash
# The Node package's suite, from a fresh clone: install the dev tools (npm ci, from the committed
# lock file), build the addon for this platform with its test switches, then run node's test
# runner against it. Tests start their own redis-servers on free ports. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "bindings-node/test.sh: node is not installed" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bindings-node/test.sh: redis-server is not installed" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error
# with the test switches (cargo feature test-hooks); `npm run build` ships without them
npx napi build --platform --release --no-js --dts native.d.ts --features test-hooks
# a hung test fails (and names itself) instead of stalling the suite; no test comes near this
node --test --test-timeout=300000 test/*.test.js
