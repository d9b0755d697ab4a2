#!/usr/bin/env bash
# The quick-start demo: a FastAPI app limited by floodwall (examples/fastapi_app.py) on
# http://127.0.0.1:${PORT:-8000}, on the embedded store, or on Redis when FLOODWALL_REDIS_URL is set.
# Makes .venv at the repository root if missing and installs the package into it (pip install .).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ".[fastapi]" "uvicorn>=0.30"
echo "floodwall demo on http://127.0.0.1:${PORT:-8000} (store: ${FLOODWALL_REDIS_URL:-embedded})"
# --no-proxy-headers: floodwall's trusted_proxies decides whom to believe about X-Forwarded-For;
# uvicorn would otherwise rewrite the peer address for requests from 127.0.0.1 first.
exec .venv/bin/uvicorn --app-dir examples fastapi_app:app --host 127.0.0.1 --port "${PORT:-8000}" --no-proxy-headers
