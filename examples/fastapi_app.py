"""A FastAPI app limited by floodwall: an app-wide limit per user (verified JWT, else client IP),
a stricter rule on POST /login, a per-route decorator keyed by user and endpoint, and a dependency.
Runs on the embedded store, or on Redis when FLOODWALL_REDIS_URL is set.

Observability (as wired in docker-compose.yml): FLOODWALL_OTLP_ENDPOINT (an OTLP/HTTP traces URL)
turns on a `floodwall.check` span per decision; with the OpenTelemetry SDK installed and
OTEL_EXPORTER_OTLP_ENDPOINT set, the app's own request spans are exported too and floodwall's
spans are their children. With prometheus-client installed, GET /metrics serves floodwall's metrics
from prometheus_client's registry.

    ./scripts/demo.sh                       # venv, pip install ., uvicorn on 127.0.0.1:8000
    FLOODWALL_REDIS_URL=redis://127.0.0.1:6379 ./scripts/demo.sh

JWT_SECRET (at least 32 bytes) verifies user tokens. Without it the app makes a random one and says
so: tokens then verify only in this process until it stops, and nobody else can mint them.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

from fastapi import Depends, FastAPI

from floodwall import HttpDecision, telemetry
from floodwall.fastapi import RateLimit, RateLimitMiddleware, Rule, limit

REDIS_URL = os.environ.get("FLOODWALL_REDIS_URL") or None  # None: the embedded in-process store


def _jwt_secret() -> str:
    # Never a fixed fallback: a secret printed in a repository lets anyone mint any identity.
    configured = os.environ.get("JWT_SECRET")
    if configured:
        return configured
    print(
        "floodwall example: JWT_SECRET is not set; using a random secret for this process only "
        "(tokens signed elsewhere will not verify). Set JWT_SECRET (at least 32 bytes) to keep one.",
        file=sys.stderr,
    )
    return secrets.token_hex(32)


JWT = {"secret": _jwt_secret()}
# Only these peers may tell us the client's address in X-Forwarded-For.
TRUSTED_PROXIES = [p for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p]

OTLP_ENDPOINT = os.environ.get("FLOODWALL_OTLP_ENDPOINT") or None
if OTLP_ENDPOINT:
    telemetry.configure_tracing(
        otlp_endpoint=OTLP_ENDPOINT, service_name=os.environ.get("OTEL_SERVICE_NAME", "floodwall")
    )
    telemetry.install_json_logs()

app = FastAPI(title="floodwall demo")

if OTLP_ENDPOINT and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
    try:  # the app's own spans, if the OpenTelemetry packages are installed (the docker image has them)
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME names it
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app)
    except ImportError:
        pass  # floodwall's spans still go out, as root spans (a client's traceparent is not trusted)

try:
    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    telemetry.register_metrics()  # floodwall's families in prometheus_client.REGISTRY

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
except ImportError:  # without prometheus-client: floodwall's own text exposition
    from fastapi.responses import PlainTextResponse

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(telemetry.prometheus_text(), media_type="text/plain; version=0.0.4")


app.add_middleware(
    RateLimitMiddleware,
    name="site",
    limits=["10/second", "100/minute"],
    key="user",  # the `sub` of a JWT whose signature verifies, else the client IP
    jwt=JWT,
    trusted_proxies=TRUSTED_PROXIES,
    headers="both",  # RateLimit-Policy / RateLimit and X-RateLimit-*
    redis_url=REDIS_URL,
    rules=[Rule("/login", "3/minute", methods=["POST"], key="ip", name="login")],
)


@app.get("/")
async def hello() -> dict[str, Any]:
    return {"hello": "world", "store": "redis" if REDIS_URL else "embedded"}


@app.post("/login")
async def login() -> dict[str, bool]:
    return {"ok": True}


@app.get("/items/{item_id}")
@limit("5/10s", key="user+endpoint", jwt=JWT, redis_url=REDIS_URL, name="items")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


search_limit = RateLimit("2/second", key="ip", redis_url=REDIS_URL, name="search")


@app.get("/search")
async def search(q: str = "", rl: HttpDecision = Depends(search_limit)) -> dict[str, Any]:
    return {"q": q, "key": rl.key}
