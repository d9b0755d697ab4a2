"""floodwall.telemetry from Python: the core's ``floodwall.check`` spans continue the app's trace (a
Python OpenTelemetry span around a FastAPI request, a traceparent header, a direct check), keys
are hashed unless configured, and the core's metrics appear in a prometheus_client registry with
real counts."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id
from prometheus_client import CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from floodwall import ConfigError, Limiter, telemetry
from floodwall.fastapi import RateLimit, RateLimitMiddleware, limit

from conftest import STRICT, RedisServer, closed_port_url

NO_PARENT = "0000000000000000"
PEER = "203.0.113.9"

# The app's side: an SDK tracer provider with an in-memory exporter (not installed globally).
py_spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(py_spans))
tracer = provider.get_tracer("floodwall-test")


@pytest.fixture(autouse=True)
def tracing() -> Iterator[None]:
    telemetry._enable_test_tracing()
    telemetry._clear_finished_spans()
    py_spans.clear()
    yield
    telemetry.disable_tracing()


def check_spans(trace_id: str | None = None) -> list[dict[str, Any]]:
    return [
        s
        for s in telemetry._finished_spans()
        if s["name"] == "floodwall.check" and (trace_id is None or s["trace_id"] == trace_id)
    ]


class Traced:
    """ASGI wrapper: each request runs inside an active Python span; its ids go out as headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("GET " + scope.get("path", "")) as span:
            sc = span.get_span_context()
            ids = [
                (b"x-test-trace", format_trace_id(sc.trace_id).encode()),
                (b"x-test-span", format_span_id(sc.span_id).encode()),
            ]

            async def send_ids(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), *ids]}
                await send(message)

            await self.app(scope, receive, send_ids)


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(PEER, 50000)), base_url="http://t")


def app_with_every_adapter(tag: str = "", **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, limits="100/minute", name="site" + tag, **options)

    @app.get("/deco")
    @limit("100/minute", name="deco" + tag, **options)
    async def deco() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/dep", dependencies=[Depends(RateLimit("100/minute", name="dep" + tag, **options))])
    async def dep() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    return app


async def test_inside_an_active_python_span_the_core_span_is_its_child(redis_server: RedisServer, prefix: str) -> None:
    app = app_with_every_adapter(redis_url=redis_server.url, prefix=prefix, **STRICT)
    async with client(Traced(app)) as c:
        # /plain: the middleware's rule only; /deco and /dep: the middleware's and the endpoint's.
        for path, rules in [("/plain", 1), ("/deco", 2), ("/dep", 2)]:
            r = await c.get(path)
            assert r.status_code == 200, r.text
            trace_id, span_id = r.headers["x-test-trace"], r.headers["x-test-span"]
            assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
            spans = check_spans(trace_id)
            assert len(spans) == rules, (path, spans)
            for s in spans:
                assert s["trace_id"] == trace_id
                assert s["parent_span_id"] == span_id
                assert s["span_id"] != span_id
                attrs = s["attributes"]
                assert re.fullmatch(r"[0-9a-f]{16}", attrs["floodwall.key_hash"])
                assert "floodwall.key" not in attrs
                assert not any(PEER in v for v in attrs.values()), "no raw IP on the span"
                assert attrs["floodwall.source"] == "redis"
                assert attrs["floodwall.allowed"] == "true"
                assert s["error"] is False
    # The Python side exported the request spans with the same ids.
    ids = {format_span_id(s.context.span_id) for s in py_spans.get_finished_spans()}
    assert all(s["parent_span_id"] in ids for s in check_spans())


async def test_record_raw_keys_puts_the_key_on_the_span() -> None:
    telemetry._enable_test_tracing(record_raw_keys=True)
    app = app_with_every_adapter()
    async with client(Traced(app)) as c:
        r = await c.get("/plain")
        [s] = check_spans(r.headers["x-test-trace"])
    assert s["parent_span_id"] == r.headers["x-test-span"]
    assert s["attributes"]["floodwall.key"] == f"site|ip:{PEER}"
    assert "floodwall.key_hash" not in s["attributes"]


async def test_with_trust_traceparent_and_no_active_span_the_header_is_the_parent() -> None:
    app = app_with_every_adapter(trust_traceparent=True)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with client(app) as c:
        r = await c.get("/deco", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert r.status_code == 200
        spans = check_spans(trace_id)
        assert [s["parent_span_id"] for s in spans] == [parent, parent]
        telemetry._clear_finished_spans()
        await c.get("/plain")
        [root] = check_spans()
        assert root["parent_span_id"] == NO_PARENT and root["trace_id"] != trace_id


async def test_an_untrusted_traceparent_header_is_not_the_parent_and_does_not_force_sampling() -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    sampled = {"traceparent": f"00-{trace_id}-{parent}-01"}
    async with client(app_with_every_adapter("-untrusted")) as c:
        for path in ("/plain", "/deco", "/dep"):
            assert (await c.get(path, headers=sampled)).status_code == 200
    assert check_spans(trace_id) == [], "a client's header became the parent"
    assert all(s["parent_span_id"] == NO_PARENT for s in check_spans())
    # With a ratio of 0, a client's sampled flag must not make floodwall record (and export) spans.
    telemetry._enable_test_tracing(sampling_ratio=0.0)
    async with client(app_with_every_adapter("-ratio0")) as c:
        for path in ("/plain", "/deco", "/dep"):
            assert (await c.get(path, headers=sampled)).status_code == 200
    assert telemetry._finished_spans() == []
    # The app trusting the header (its proxy sets it) follows it, sampled flag included.
    async with client(app_with_every_adapter("-trusted", trust_traceparent=True)) as c:
        assert (await c.get("/plain", headers=sampled)).status_code == 200
    assert [s["parent_span_id"] for s in check_spans(trace_id)] == [parent]
    # An active in-process span is trusted whatever the option, with or without a header.
    telemetry._enable_test_tracing()
    async with client(Traced(app_with_every_adapter("-active"))) as c:
        r = await c.get("/plain", headers=sampled)
    assert [s["parent_span_id"] for s in check_spans(r.headers["x-test-trace"])] == [r.headers["x-test-span"]]


async def test_spans_carry_no_key_text() -> None:
    # An over-long key (its error quoted its start) and a failing store: no key text on the span.
    limiter = Limiter("5/minute")
    with pytest.raises(ConfigError):
        await limiter.check("user:alice-" + "x" * 5000)
    app = FastAPI()

    @app.get("/t")
    @limit("5/minute", key=lambda r: "tenant:alice", redis_url=closed_port_url(), fallback="error", timeout_ms=200)
    async def t() -> str:
        return "t"

    async with client(app) as c:
        assert (await c.get("/t")).status_code == 200
    spans = check_spans()
    assert len(spans) == 2 and all(s["error"] and s["status"] for s in spans), spans
    for s in spans:
        text = f"{s['attributes']} {s['status']} {s['events']}"
        assert "alice" not in text, text


def _span_key_hash(secret: str | None) -> str:
    """floodwall.key_hash of the key "ip:192.0.2.1" in a fresh process with this secret."""
    env = {k: v for k, v in os.environ.items() if k != "FLOODWALL_KEY_SECRET"}
    if secret is not None:
        env["FLOODWALL_KEY_SECRET"] = secret
    code = (
        "from floodwall import Limiter, telemetry\n"
        "telemetry._enable_test_tracing()\n"
        "Limiter('5/minute').check_sync('ip:192.0.2.1')\n"
        "print(telemetry._finished_spans()[0]['attributes']['floodwall.key_hash'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_key_hash_is_keyed_by_the_deployment_secret() -> None:
    bare = hashlib.sha256(b"ip:192.0.2.1").hexdigest()[:16]
    a, b = "a" * 32 + "-secret", "b" * 32 + "-secret"
    ha, ha2, hb, h_random = _span_key_hash(a), _span_key_hash(a), _span_key_hash(b), _span_key_hash(None)
    assert re.fullmatch(r"[0-9a-f]{16}", ha)
    assert bare not in (ha, hb, h_random), "an IPv4 key's bare SHA-256 can be looked up"
    assert ha == ha2, "instances sharing FLOODWALL_KEY_SECRET agree"
    assert ha != hb, "another secret, another hash"


async def test_limiter_check_and_peek_take_a_traceparent(redis_server: RedisServer, prefix: str) -> None:
    limiter = Limiter("10/second", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    trace_id = "0af7651916cd43dd8448eb211c80319c"

    def tp(span: str) -> str:
        return f"00-{trace_id}-{span}-01"

    await limiter.check("a", traceparent=tp("1111111111111111"))
    await limiter.check("b", 2, traceparent=tp("2222222222222222"))
    await limiter.check("c")
    await limiter.peek("a", traceparent=tp("3333333333333333"))
    limiter.check_sync("a", traceparent=tp("4444444444444444"))
    limiter.peek_sync("a", traceparent=tp("5555555555555555"))
    got = sorted(
        (s["parent_span_id"], s["attributes"]["floodwall.op"], s["attributes"]["floodwall.cost"])
        for s in check_spans(trace_id)
    )
    assert got == [
        ("1111111111111111", "check", "1"),
        ("2222222222222222", "check", "2"),
        ("3333333333333333", "peek", "1"),
        ("4444444444444444", "check", "1"),
        ("5555555555555555", "peek", "1"),
    ]
    assert len([s for s in check_spans() if s["trace_id"] != trace_id]) == 1, "the untraced check is a root span"
    telemetry.disable_tracing()
    telemetry._clear_finished_spans()
    await limiter.check("a", traceparent=tp("1111111111111111"))
    assert telemetry._finished_spans() == [], "tracing off: no spans"


def test_configure_tracing_refuses_bad_options() -> None:
    with pytest.raises(ConfigError, match="sampling_ratio"):
        telemetry.configure_tracing(sampling_ratio=1.5)
    with pytest.raises(ConfigError, match="log filter"):
        telemetry.install_json_logs("floodwall=[[[")
    telemetry.configure_tracing(sampling_ratio=0.0, service_name="py-test")
    assert telemetry.tracing_enabled()
    telemetry.disable_tracing()
    assert not telemetry.tracing_enabled()


def test_prometheus_client_registry_shows_the_core_metrics() -> None:
    limiter = Limiter("5/second", name="py-metrics")
    assert limiter.name == "py-metrics"
    registry = CollectorRegistry()
    assert telemetry.register_metrics(registry) is registry
    assert telemetry.register_metrics(registry) is registry  # twice: nothing more
    n = 7
    for _ in range(n):
        limiter.check_sync("k")
    text = generate_latest(registry).decode()
    assert "# TYPE floodwall_decisions_total counter" in text
    assert 'floodwall_decisions_total{limiter="py-metrics",result="allowed",source="memory"} 5.0' in text
    assert 'floodwall_decisions_total{limiter="py-metrics",result="denied",source="memory"} 2.0' in text
    assert "# TYPE floodwall_redis_latency_seconds histogram" in text
    assert 'floodwall_redis_latency_seconds_bucket{le="+Inf",limiter="py-metrics"} 0.0' in text
    assert 'floodwall_breaker_state{limiter="py-metrics"} 0.0' in text
    # The core's own text carries the same counts.
    assert (
        'floodwall_decisions_total{limiter="py-metrics",source="memory",result="allowed"} 5'
        in telemetry.prometheus_text()
    )
    for _ in range(3):
        limiter.check_sync("other")
    text = generate_latest(registry).decode()
    assert 'floodwall_decisions_total{limiter="py-metrics",result="allowed",source="memory"} 8.0' in text


def test_n_allowed_checks_count_in_the_registry() -> None:
    limiter = Limiter("1000/second", name="py-metrics-n")
    registry = CollectorRegistry()
    telemetry.register_metrics(registry)
    n = 25
    for i in range(n):
        limiter.check_sync(f"k{i % 3}")
    text = generate_latest(registry).decode()
    assert f'floodwall_decisions_total{{limiter="py-metrics-n",result="allowed",source="memory"}} {n}.0' in text


async def test_adapter_rules_label_their_metrics_by_name() -> None:
    # Live limiters of one name are summed: names of their own here.
    app = app_with_every_adapter("-labels")
    registry = CollectorRegistry()
    telemetry.register_metrics(registry)
    async with client(app) as c:
        for _ in range(3):
            assert (await c.get("/deco")).status_code == 200
    text = generate_latest(registry).decode()
    assert 'floodwall_decisions_total{limiter="deco-labels",result="allowed",source="memory"} 3.0' in text
    assert 'floodwall_decisions_total{limiter="site-labels",result="allowed",source="memory"} 3.0' in text
