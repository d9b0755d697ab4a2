"""FastAPI endpoint keys and client IPs: the middleware keys a request by the route the app will
run (not the URL), HEAD spends GET's budget, network aggregates (ipv6/48, ipv4/24), RFC 7239
Forwarded, and a proxy on a unix socket (uvicorn --uds)."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from floodwall import ConfigError, HttpLimiter, HttpRule, Limiter
from floodwall.fastapi import RateLimitMiddleware, Rule

PEER = "203.0.113.7"


def client(app: FastAPI, peer: str = PEER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def counting_app(**middleware: Any) -> tuple[FastAPI, dict[str, int]]:
    app = FastAPI()
    runs = {"n": 0}
    app.add_middleware(RateLimitMiddleware, **middleware)

    @app.api_route("/items/{item_id}", methods=["GET", "HEAD"])
    async def item(item_id: int, request: Request) -> dict[str, Any]:
        runs["n"] += 1
        return {"id": item_id}

    @app.api_route("/x", methods=["GET", "HEAD"])
    async def x() -> dict[str, Any]:
        runs["n"] += 1
        return {}

    router = APIRouter()

    @router.get("/users/{uid}")
    async def user(uid: int) -> dict[str, Any]:
        runs["n"] += 1
        return {}

    app.include_router(router, prefix="/v1")
    return app, runs


async def test_middleware_endpoint_key_is_the_route_template() -> None:
    app, runs = counting_app(limits="2/minute", key="endpoint+ip")
    async with client(app) as c:
        statuses = [(await c.get(f"/items/{i}")).status_code for i in range(2, 42)]
        assert statuses.count(200) == 2 and runs["n"] == 2, statuses
        r = await c.get("/items/99")
        assert r.status_code == 429
        # Another route has its own bucket; routers included with a prefix keep their template.
        assert (await c.get("/v1/users/1")).status_code == 200
        assert (await c.get("/v1/users/2")).status_code == 200
        assert (await c.get("/v1/users/3")).status_code == 429


async def test_unrouted_paths_are_normalised_as_starlette_routes_them() -> None:
    app, _ = counting_app(limits="3/minute", key="endpoint+ip")
    async with client(app) as c:
        # No route matches these; they are one spelling of /nowhere (Starlette is case-sensitive).
        paths = ["/nowhere", "/nowhere/", "http://testserver//nowhere", "/nowh%65re"]
        statuses = [(await c.get(p)).status_code for p in paths]
        assert statuses == [404, 404, 404, 429]
        assert (await c.get("/NOWHERE")).status_code == 404


async def test_head_spends_the_get_bucket() -> None:
    app, runs = counting_app(limits="2/minute", key="endpoint+ip")
    async with client(app) as c:
        assert (await c.get("/x")).status_code == 200
        assert (await c.head("/x")).status_code == 200
        assert (await c.get("/x")).status_code == 429
        assert (await c.head("/x")).status_code == 429
        assert runs["n"] == 2


async def test_thirty_64s_of_one_48_pass_only_the_aggregate_limit() -> None:
    app, runs = counting_app(
        limits="2/minute",
        key="ip",
        trusted_proxies=["10.0.0.0/8"],
        rules=[Rule("*", "5/minute", key="ipv6/48", name="net48"), Rule("*", "1/minute", key="ipv4/24", name="net24")],
    )
    async with client(app, peer="10.0.0.1") as c:
        ok = 0
        for i in range(30):
            r = await c.get("/x", headers={"X-Forwarded-For": f"2001:db8:42:{i:x}::1"})
            ok += r.status_code == 200
        assert ok == 5 and runs["n"] == 5
        other = await c.get("/x", headers={"X-Forwarded-For": "2001:db8:43::1"})
        assert other.status_code == 200
        policy = other.headers["RateLimit-Policy"]
        assert "net48" in policy and "net24" not in policy, policy


async def test_forwarded_header_is_read_when_configured() -> None:
    native = HttpLimiter(
        [HttpRule("r", Limiter("9/minute"))], trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded"
    )
    assert native.forwarded_header == "forwarded"
    for value, want in [
        ('for="[2001:db8:cafe::17]:4711";proto=https', "ip:2001:db8:cafe::/64"),
        ("for=6.6.6.6, for=203.0.113.7, for=10.1.1.1", "ip:203.0.113.7"),
        ("for=6.6.6.6, for=_hidden", "ip:10.0.0.1"),
    ]:
        assert native.client_ip("10.0.0.1", value)[0] == want, value
        assert (await native.decide("GET", "/", "10.0.0.1", forwarded_for=value)).key == want

    # Through the middleware: Forwarded names the client; a client's own X-Forwarded-For is ignored.
    app = FastAPI()

    @app.get("/k")
    async def k() -> dict[str, Any]:
        return {}

    app.add_middleware(
        RateLimitMiddleware, limits="1/minute", trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded"
    )
    async with client(app, peer="10.0.0.1") as c:
        assert (await c.get("/k", headers={"Forwarded": "for=198.51.100.1"})).status_code == 200
        assert (await c.get("/k", headers={"Forwarded": "for=198.51.100.2"})).status_code == 200
        assert (await c.get("/k", headers={"Forwarded": "for=198.51.100.2"})).status_code == 429
        # X-Forwarded-For is not the configured header: both requests are the proxy's own.
        assert (await c.get("/k", headers={"X-Forwarded-For": "198.51.100.3"})).status_code == 200
        assert (await c.get("/k", headers={"X-Forwarded-For": "198.51.100.4"})).status_code == 429


def test_options_name_bad_values() -> None:
    rule = HttpRule("r", Limiter("1/minute"))
    with pytest.raises(ConfigError, match='"x-real-ip"'):
        HttpLimiter([rule], forwarded_header="x-real-ip")
    with pytest.raises(ConfigError, match='"ipv4/33"'):
        HttpRule("r", Limiter("1/minute"), key="ip+ipv4/33")
    with pytest.raises(ConfigError, match='"ipv6/0"'):
        RateLimitMiddleware(FastAPI(), limits="1/minute", key="ipv6/0")
    assert HttpLimiter([HttpRule("e", Limiter("1/minute"), key="endpoint")]).needs_route
    assert not HttpLimiter([rule]).needs_route


# --- a proxy on a unix socket, with a real uvicorn ----------------------------------------------


@contextlib.contextmanager
def uvicorn_on_unix_socket(app: FastAPI) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "app.sock")
        config = uvicorn.Config(app, uds=path, log_level="warning", lifespan="off", proxy_headers=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            for _ in range(500):  # wait for the socket to accept, not for a fixed time
                if server.started:
                    break
                time.sleep(0.01)
            assert server.started, "uvicorn did not start"
            yield path
        finally:
            server.should_exit = True
            thread.join(10)


@pytest.mark.parametrize("trust", [False, True])
async def test_unix_socket_peer(trust: bool) -> None:
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, limits="10/minute", trust_unix_socket=trust)

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        return {"client": request.scope.get("client")}

    with uvicorn_on_unix_socket(app) as path:
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
            # Ask the core which key the middleware made, through the headers' bucket: two
            # different forwarded clients share one bucket only when the header is ignored.
            r = await c.get("/who", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
            assert r.status_code == 200 and r.json() == {"client": None}
            first = r.headers["RateLimit"]
            r = await c.get("/who", headers={"X-Forwarded-For": "203.0.113.8"})
            second = r.headers["RateLimit"]
    # Untrusted: one ip:unknown bucket (r=9 then r=8). Trusted: each forwarded client has its own.
    assert first.startswith('"per-minute";r=9;')
    assert second.startswith('"per-minute";r=9;' if trust else '"per-minute";r=8;'), second
