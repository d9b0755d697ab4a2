"""FastAPI over httpx: the decorator, the dependency and the middleware; headers and the 429 body;
client IPs behind (un)trusted proxies; verified JWT users; per-route and app-wide rules decided
together; and a Redis outage that never becomes a 500."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from floodwall import ConfigError, HttpDecision, HttpLimiter, HttpRule, Limiter
from floodwall.fastapi import RateLimit, RateLimitExceeded, RateLimitMiddleware, Rule, limit

from conftest import STRICT, RedisServer, closed_port_url

SECRET = "test-secret-for-hs256-at-least-32-bytes!"
PEER = "203.0.113.7"


def client(app: FastAPI, peer: str = PEER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def token(sub: str, key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    return pyjwt.encode({"sub": sub, **claims}, key, algorithm=algorithm)


def unsigned(sub: str) -> str:
    return pyjwt.encode({"sub": sub}, None, algorithm="none")  # type: ignore[arg-type]


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


# --- the decorator ---------------------------------------------------------------------------


async def test_decorator_headers_429_body_and_no_request_param() -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    @limit("2/minute")
    async def items(item_id: int, q: str = "x") -> dict[str, Any]:
        return {"id": item_id, "q": q}

    async with client(app) as c:
        r = await c.get("/items/7?q=hello")
        assert r.status_code == 200 and r.json() == {"id": 7, "q": "hello"}
        assert r.headers["RateLimit-Policy"] == '"per-minute";q=2;w=60'
        assert r.headers["RateLimit"].startswith('"per-minute";r=1;t=')
        assert "Retry-After" not in r.headers and "X-RateLimit-Limit" not in r.headers
        assert (await c.get("/items/8")).status_code == 200
        r = await c.get("/items/9")
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"] == "rate_limited" and body["limit"] == "2/minute"
        assert 0 < body["retry_after"] <= 120
        assert int(r.headers["Retry-After"]) >= body["retry_after"]
        assert r.headers["RateLimit"].startswith('"per-minute";r=0;t=')
        # Validation still happens (the wrapper keeps the endpoint's signature).
        assert (await c.get("/items/not-a-number")).status_code in (422, 429)


async def test_decorator_on_sync_endpoint_and_response_objects() -> None:
    app = FastAPI()

    @app.get("/sync")
    @limit("5/minute", headers="both")
    def sync_endpoint() -> dict[str, str]:
        return {"ok": "sync"}

    @app.get("/plain")
    @limit("5/minute", headers="legacy")
    async def plain() -> Response:
        return PlainTextResponse("hi")

    async with client(app) as c:
        r = await c.get("/sync")
        assert r.json() == {"ok": "sync"}
        assert r.headers["X-RateLimit-Limit"] == "5" and r.headers["X-RateLimit-Remaining"] == "4"
        assert "RateLimit-Policy" in r.headers
        r = await c.get("/plain")
        assert r.text == "hi" and r.headers["X-RateLimit-Remaining"] == "4"
        assert "RateLimit-Policy" not in r.headers


async def test_decorated_endpoint_may_take_its_own_request_and_response() -> None:
    # FastAPI fills one Request and one Response parameter: the decorator's own must not take them.
    app = FastAPI()

    @app.get("/mine")
    @limit("1/minute")
    async def mine(request: Request, response: Response) -> str:
        response.headers["X-Mine"] = "1"
        return str(request.state.rate_limit.allowed)

    async with client(app) as c:
        r = await c.get("/mine")
        assert r.status_code == 200 and r.json() == "True" and r.headers["X-Mine"] == "1", r.text
        assert r.headers["RateLimit-Policy"] == '"per-minute";q=1;w=60'
        assert (await c.get("/mine")).status_code == 429


async def test_decorated_endpoints_count_apart() -> None:
    app = FastAPI()

    @app.get("/a")
    @limit("1/minute")
    async def a() -> str:
        return "a"

    @app.get("/b")
    @limit("1/minute")
    async def b() -> str:
        return "b"

    async with client(app) as c:
        assert [(await c.get(p)).status_code for p in ("/a", "/b", "/a", "/b")] == [200, 200, 429, 429]


# --- the dependency --------------------------------------------------------------------------


async def test_dependency_form() -> None:
    app = FastAPI()
    per_user = RateLimit("2/minute", key="user", jwt={"secret": SECRET})

    @app.get("/search", dependencies=[Depends(RateLimit("3/minute"))])
    async def search() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/me")
    async def me(d: HttpDecision = Depends(per_user)) -> dict[str, Any]:
        return {"key": d.key, "verified": d.user_verified}

    async with client(app) as c:
        codes = []
        for _ in range(4):
            r = await c.get("/search")
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429]
        assert r.json()["limit"] == "3/minute" and r.json()["error"] == "rate_limited"
        assert "Retry-After" in r.headers and r.headers["RateLimit-Policy"] == '"per-minute";q=3;w=60'
        r = await c.get("/search")  # the handler stays installed
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"

        r = await c.get("/me", headers=bearer(token("alice")))
        assert r.json() == {"key": "user:alice", "verified": True}
        assert r.headers["RateLimit-Policy"] == '"per-minute";q=2;w=60'


async def test_dependency_respects_an_app_handler() -> None:
    app = FastAPI()

    @app.exception_handler(RateLimitExceeded)
    async def mine(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("slow down", status_code=429)

    @app.get("/x", dependencies=[Depends(RateLimit("1/minute"))])
    async def x() -> str:
        return "x"

    async with client(app) as c:
        await c.get("/x")
        r = await c.get("/x")
        assert r.status_code == 429 and r.text == "slow down"


# --- client IP, proxies, JWT, keys --------------------------------------------------------------


async def test_forged_forwarded_for_from_untrusted_peer_does_not_change_the_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = FastAPI()

    @app.get("/")
    @limit("2/minute")
    async def root() -> str:
        return "ok"

    monkeypatch.setattr("floodwall.fastapi._warned_xff", False)
    with caplog.at_level(logging.WARNING, logger="floodwall"):
        async with client(app, peer=PEER) as c:
            codes = [(await c.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    warnings = [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1


async def test_trusted_proxy_forwarded_for_selects_the_client() -> None:
    app = FastAPI()

    @app.get("/")
    @limit("1/minute", trusted_proxies=["10.0.0.0/8"])
    async def root() -> str:
        return "ok"

    async with client(app, peer="10.1.2.3") as c:
        # The right-most untrusted address is the client; a forged left-most entry is ignored.
        assert (await c.get("/", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.0.0.9"})).status_code == 200
        assert (await c.get("/", headers={"X-Forwarded-For": "7.7.7.7, 198.51.100.1"})).status_code == 429
        assert (await c.get("/", headers={"X-Forwarded-For": "198.51.100.2"})).status_code == 200


async def test_forged_or_unsigned_jwt_does_not_select_that_users_bucket() -> None:
    app = FastAPI()

    @app.get("/")
    @limit("1/minute", key="user", jwt={"secret": SECRET})
    async def root() -> str:
        return "ok"

    forged = token("alice", key="not-the-secret-but-long-enough-32-bytes")
    async with client(app, peer=PEER) as c:
        # An attacker's forged and unsigned tokens land in the attacker's own IP bucket...
        assert (await c.get("/", headers=bearer(forged))).status_code == 200
        assert (await c.get("/", headers=bearer(unsigned("alice")))).status_code == 429
        # ...so alice's own bucket is untouched.
        assert (await c.get("/", headers=bearer(token("alice")))).status_code == 200
        assert (await c.get("/", headers=bearer(token("alice")))).status_code == 429
    async with client(app, peer="198.51.100.50") as c:
        assert (await c.get("/", headers=bearer(token("bob")))).status_code == 200
        # An expired token for bob is anonymous: this peer's IP bucket.
        expired = token("bob", exp=int(time.time()) - 3600)
        assert (await c.get("/", headers=bearer(expired))).status_code == 200
        assert (await c.get("/", headers=bearer(expired))).status_code == 429


def _pem(public_key: Any) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_jwt(algorithm: str) -> None:
    key: Any = (
        rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
    )
    other: Any = (
        rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
    )
    lim = Limiter("10/minute")
    h = HttpLimiter(
        [HttpRule("r", lim, key="user")],
        jwt={"public_key": _pem(key.public_key()), "algorithm": algorithm, "issuer": "me", "audience": "api"},
    )
    good = token("carol", key=key, algorithm=algorithm, iss="me", aud="api")
    assert h.verified_user(f"Bearer {good}") == "carol"
    assert h.verified_user(f"Bearer {token('carol', key=other, algorithm=algorithm, iss='me', aud='api')}") is None
    assert h.verified_user(f"Bearer {token('carol', key=key, algorithm=algorithm, iss='me', aud='web')}") is None
    # HS256 signed with the public key as the secret (algorithm confusion) is refused.
    assert h.verified_user(f"Bearer {unsigned('carol')}") is None
    d = h.decide_sync("GET", "/", PEER, authorization=f"Bearer {good}")
    assert d.key == "user:carol" and d.user_verified


def test_key_scopes_resolve_in_the_core() -> None:
    lim = Limiter("100/minute")
    h = HttpLimiter(
        [
            HttpRule("composite", lim, key="user+endpoint+ip"),
            HttpRule("apikey", Limiter("100/minute"), key="api_key"),
            HttpRule("everyone", Limiter("100/minute"), key="global"),
            HttpRule("custom", Limiter("100/minute"), key=None),
        ],
        jwt={"secret": SECRET},
        api_keys={"allow": ["sk_live_1"]},
    )
    d = h.decide_sync(
        "get",
        "/items/5",
        PEER,
        route="/items/{id}",
        authorization=f"Bearer {token('alice')}",
        api_key="sk_live_1",
        keys={"custom": "tenant:acme"},
    )
    keys = {x.rule: x.key for x in d.decisions}
    assert keys["composite"] == f"user:alice|ep:GET /items/{{id}}|ip:{PEER}"
    assert keys["apikey"].startswith("apikey:") and "sk_live_1" not in keys["apikey"]
    assert keys["everyone"] == "global" and keys["custom"] == "tenant:acme"
    # Anonymous: the user part falls back to the IP (once), the API key part too.
    d = h.decide_sync("GET", "/items/5", PEER, route="/items/{id}", keys={"custom": "t"})
    keys = {x.rule: x.key for x in d.decisions}
    assert keys["composite"] == f"ip:{PEER}|ep:GET /items/{{id}}" and keys["apikey"] == f"ip:{PEER}"
    # No app key: that rule keys the request by its client IP and says so (never a 500).
    d = h.decide_sync("GET", "/", PEER)
    assert {x.rule: x.key for x in d.decisions}["custom"] == f"ip:{PEER}"
    assert [rule for rule, _ in d.key_errors] == ["custom"]
    assert h.custom_key_rules == ["custom"]


def test_ipv6_clients_group_by_prefix() -> None:
    h = HttpLimiter([HttpRule("r", Limiter("1/minute"))], ipv6_prefix=48)
    assert h.client_ip("2001:db8:1:2::1") == ("ip:2001:db8:1::/48", False)
    assert h.decide_sync("GET", "/", "2001:db8:1:aaaa::1").allowed
    assert not h.decide_sync("GET", "/", "2001:db8:1:bbbb::2").allowed
    assert h.decide_sync("GET", "/", "2001:db8:2::1").allowed
    assert HttpLimiter([HttpRule("r", Limiter("1/minute"))]).client_ip("2001:db8::1")[0] == "ip:2001:db8::/64"


async def test_api_key_global_and_callable_keys_through_fastapi() -> None:
    app = FastAPI()

    @app.get("/k")
    @limit("1/minute", key="api_key", api_key_header="X-Key", api_keys={"allow": ["one", "two"]})
    async def k() -> str:
        return "k"

    @app.get("/g")
    @limit("1/minute", key="global")
    async def g() -> str:
        return "g"

    async def tenant(request: Request) -> str:
        return "tenant:" + request.headers.get("x-tenant", "none")

    @app.get("/t")
    @limit("1/minute", key=tenant)
    async def t() -> str:
        return "t"

    async with client(app) as c:
        assert (await c.get("/k", headers={"X-Key": "one"})).status_code == 200
        assert (await c.get("/k", headers={"X-Key": "two"})).status_code == 200
        assert (await c.get("/k", headers={"X-Key": "one"})).status_code == 429
    async with client(app, peer="198.51.100.1") as c1, client(app, peer="198.51.100.2") as c2:
        assert (await c1.get("/g")).status_code == 200
        assert (await c2.get("/g")).status_code == 429
        assert (await c1.get("/t", headers={"X-Tenant": "a"})).status_code == 200
        assert (await c2.get("/t", headers={"X-Tenant": "a"})).status_code == 429
        assert (await c2.get("/t", headers={"X-Tenant": "b"})).status_code == 200


# --- the middleware ----------------------------------------------------------------------------


def app_with_middleware(**kw: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/login")
    async def login() -> str:
        return "in"

    @app.get("/login")
    async def login_page() -> str:
        return "page"

    @app.get("/api/things/{n}")
    async def things(n: int) -> int:
        return n

    @app.get("/health")
    async def health() -> str:
        return "up"

    app.add_middleware(RateLimitMiddleware, **kw)
    return app


async def test_middleware_per_route_rules_and_methods() -> None:
    app = app_with_middleware(rules=[Rule("/login", "2/minute", methods=["POST"]), Rule("/api/*", "3/minute")])
    async with client(app) as c:
        assert [(await c.post("/login")).status_code for _ in range(3)] == [200, 200, 429]
        r = await c.get("/login")  # GET is not limited by the POST rule
        assert r.status_code == 200 and "RateLimit" not in r.headers
        assert [(await c.get(f"/api/things/{i}")).status_code for i in range(4)] == [200, 200, 200, 429]
        r = await c.get("/health")
        assert r.status_code == 200 and "RateLimit-Policy" not in r.headers


async def test_middleware_matching_rules_are_decided_together() -> None:
    app = app_with_middleware(limits="4/minute", rules=[Rule("/login", "2/minute", methods=["POST"])])
    async with client(app) as c:
        r = await c.post("/login")
        # Both limits are described; equal policy names are told apart by rule name.
        assert r.headers["RateLimit-Policy"] == '"default-per-minute";q=4;w=60, "login-per-minute";q=2;w=60'
        assert r.headers["RateLimit"].startswith('"default-per-minute";r=3;t=')
        assert ', "login-per-minute";r=1;t=' in r.headers["RateLimit"]
        assert (await c.post("/login")).status_code == 200
        r = await c.post("/login")  # the route rule denies while the app-wide one allows
        assert r.status_code == 429 and r.json()["limit"] == "2/minute"
        r = await c.get("/health")  # the app-wide rule has seen 4 requests by now
        assert r.status_code == 200 and r.headers["RateLimit"].startswith('"per-minute";r=0;')
        r = await c.get("/health")  # and now it denies
        assert r.status_code == 429 and r.json()["limit"] == "4/minute"
        r = await c.post("/login")  # both deny: Retry-After is the longest wait
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


async def test_middleware_headers_styles_and_key_function() -> None:
    app = app_with_middleware(limits="2/minute", headers="legacy", key=lambda request: "all")
    async with client(app, peer="198.51.100.1") as c1, client(app, peer="198.51.100.2") as c2:
        r = await c1.get("/health")
        assert r.headers["X-RateLimit-Limit"] == "2" and r.headers["X-RateLimit-Remaining"] == "1"
        assert int(r.headers["X-RateLimit-Reset"]) > 0 and "RateLimit-Policy" not in r.headers
        assert (await c2.get("/health")).status_code == 200
        r = await c1.get("/health")
        assert r.status_code == 429 and "Retry-After" in r.headers


async def test_key_functions_run_only_for_rules_that_apply() -> None:
    calls: list[str] = []

    def tenant(request: Request) -> str:
        calls.append(request.url.path)
        return request.headers["x-tenant"]  # only the /api routes carry it

    app = app_with_middleware(limits="100/minute", rules=[Rule("/api/*", "1/minute", key=tenant)])
    async with client(app) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/api/things/1", headers={"X-Tenant": "a"})).status_code == 200
        assert (await c.get("/api/things/2", headers={"X-Tenant": "a"})).status_code == 429
        assert (await c.get("/api/things/3", headers={"X-Tenant": "b"})).status_code == 200
    assert calls == ["/api/things/1", "/api/things/2", "/api/things/3"]


@pytest.mark.parametrize("bad", [None, "", "k" * 5000], ids=["None", "empty", "over-4KiB"])
async def test_a_bad_app_key_is_keyed_by_client_ip_and_logged_once(
    bad: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    # Not one shared "None" bucket, not a 500: each client its own IP bucket, and one error line.
    app = app_with_middleware(rules=[Rule("/health", "1/minute", key=lambda request: bad)])

    @app.get("/deco")
    @limit("1/minute", key=lambda request: bad)
    async def deco() -> str:
        return "deco"

    with caplog.at_level(logging.WARNING, logger="floodwall"):
        async with client(app, peer="198.51.100.1") as c1, client(app, peer="198.51.100.2") as c2:
            for path in ("/health", "/deco"):
                assert (await c1.get(path)).status_code == 200, path
                r = await c2.get(path)
                assert r.status_code == 200, f"{path}: a second client shares the first one's bucket: {r.text}"
                r = await c1.get(path)
                assert r.status_code == 429, path
                assert "kkkk" not in r.text
    errors = [r for r in caplog.records if "key function" in r.getMessage()]
    # once per adapter: the middleware's and the decorator's
    assert len(errors) == 2 and all(r.levelno == logging.ERROR for r in errors), [r.getMessage() for r in errors]
    assert not any("kkkk" in r.getMessage() for r in caplog.records), "the key is never echoed"
    d = HttpLimiter([HttpRule("fn", Limiter("5/minute"), key=None)]).decide_sync(
        "GET", "/", "192.0.2.1", keys={} if bad is None else {"fn": bad}
    )
    assert d.key == "ip:192.0.2.1" and d.key_errors[0][0] == "fn" and "kkkk" not in d.key_errors[0][1]


# --- shadow rules ------------------------------------------------------------------------------


def shadow_records(caplog: pytest.LogCaptureFixture, rule: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"shadow rule {rule!r}" in r.getMessage()]


async def test_middleware_shadow_rule_counts_and_reports_but_never_denies(caplog: pytest.LogCaptureFixture) -> None:
    trial = Limiter("2/minute")
    app = FastAPI()

    @app.get("/search")
    async def search(request: Request) -> list[str]:
        return list(request.state.rate_limit.shadow_denied)

    app.add_middleware(
        RateLimitMiddleware,
        limits="100/minute",
        rules=[Rule("/search", limiter=trial, name="search-trial", shadow=True)],
    )
    with caplog.at_level(logging.INFO, logger="floodwall"):
        async with client(app) as c:
            responses = [await c.get("/search") for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert [r.json() for r in responses] == [[], [], ["search-trial"], ["search-trial"], ["search-trial"]]
    for r in responses:
        # Only the enforced app-wide limit is described; the shadow rule sends nothing of its own.
        assert r.headers["RateLimit-Policy"] == '"per-minute";q=100;w=60', r.headers
        assert "q=2" not in r.headers["RateLimit"] and "Retry-After" not in r.headers
    metrics = trial.metrics()["decisions"]
    assert (metrics["memory_allowed"], metrics["memory_denied"], metrics["memory_shadow_denied"]) == (2, 0, 3)
    # Three would-be denials, one log line (the next within a minute are only counted).
    records = shadow_records(caplog, "search-trial")
    assert len(records) == 1 and records[0].levelno == logging.INFO, [r.getMessage() for r in records]


async def test_decorator_and_dependency_shadow_limits_never_deny() -> None:
    app = FastAPI()

    @app.get("/deco")
    @limit("2/minute", shadow=True)
    async def deco(request: Request) -> list[str]:
        return list(request.state.rate_limit.shadow_denied)

    trial = RateLimit("2/minute", name="dep-trial", shadow=True)

    @app.get("/dep")
    async def dep(d: HttpDecision = Depends(trial)) -> list[str]:
        return list(d.shadow_denied)

    async with client(app) as c:
        for path in ("/deco", "/dep"):
            responses = [await c.get(path) for _ in range(5)]
            assert [r.status_code for r in responses] == [200] * 5, path
            assert [bool(r.json()) for r in responses] == [False, False, True, True, True], path
            for r in responses:
                assert not any(h.lower().startswith(("ratelimit", "retry-after")) for h in r.headers), r.headers
    assert responses[2].json() == ["dep-trial"]


def test_shadow_is_a_bool_on_every_form() -> None:
    r = HttpRule("t", Limiter("1/minute"), shadow=True)
    assert r.shadow and "shadow=True" in repr(r)
    assert not HttpRule("u", Limiter("1/minute")).shadow
    d = HttpLimiter([r]).decide_sync("GET", "/", "192.0.2.1")
    d = HttpLimiter([r]).decide_sync("GET", "/", "192.0.2.1")
    assert d.allowed and d.shadow_denied == ["t"] and d.headers == []
    assert d.decisions[0].shadow and not d.decisions[0].decision.allowed
    for bad in ("false", 1, None):
        with pytest.raises(TypeError, match="shadow"):
            Rule("/x", "1/minute", shadow=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="shadow"):
            limit("1/minute", shadow=bad)(lambda: None)  # type: ignore[arg-type]


def test_a_rule_cost_above_its_limit_is_refused_when_built() -> None:
    with pytest.raises(ConfigError, match=r'cost "6": rule "r": exceeds its limit of 5 per request \(5/minute\)'):
        HttpRule("r", Limiter("5/minute"), cost=6)
    with pytest.raises(ConfigError, match=r'cost "6".*limit of 5'):
        limit("5/minute", cost=6)(lambda: None)
    with pytest.raises(ConfigError, match=r'cost "3".*limit of 2'):
        RateLimit(["10/second", "2/minute"], cost=3)
    with pytest.raises(ConfigError, match=r'cost "4".*"login".*limit of 3'):
        RateLimitMiddleware(FastAPI(), rules=[Rule("/login", "3/minute", cost=4)])
    assert HttpRule("r", Limiter("5/minute"), cost=5).cost == 5


def test_bad_configuration_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match="route pattern"):
        RateLimitMiddleware(FastAPI(), rules=[Rule("login", "1/minute")])
    with pytest.raises(ConfigError, match="ipaddr"):
        RateLimitMiddleware(FastAPI(), limits="1/minute", key="ipaddr")
    with pytest.raises(ConfigError, match="ten/minute"):
        RateLimitMiddleware(FastAPI(), limits="ten/minute")
    with pytest.raises(ConfigError, match="trusted proxy"):
        limit("1/minute", trusted_proxies=["not-an-ip"])(lambda: None)
    with pytest.raises(ConfigError, match="jwt"):
        RateLimit("1/minute", key="user", jwt={"secret": SECRET, "algorithm": "RS256"})
    with pytest.raises(ConfigError, match="private key"):
        RateLimit(
            "1/minute", key="user", jwt={"public_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"}
        )
    with pytest.raises(ConfigError, match="header style"):
        RateLimit("1/minute", headers="fancy")
    with pytest.raises(ConfigError, match="two rules share"):
        HttpLimiter([HttpRule("a", Limiter("1/s")), HttpRule("a", Limiter("1/s"))])
    with pytest.raises(TypeError, match="redis"):
        RateLimit("1/minute", redis="redis://x")
    with pytest.raises(TypeError):
        RateLimitMiddleware(FastAPI())


# --- Redis, and Redis failing ---------------------------------------------------------------------


async def test_redis_backed_rules(redis_server: RedisServer, prefix: str) -> None:
    app = app_with_middleware(limits="3/minute", redis_url=redis_server.url, prefix=prefix, **STRICT)
    async with client(app) as c:
        assert [(await c.get("/health")).status_code for _ in range(4)] == [200, 200, 200, 429]
    # A second app (another worker) shares the counts through Redis.
    other = app_with_middleware(limits="3/minute", redis_url=redis_server.url, prefix=prefix, **STRICT)
    async with client(other) as c:
        assert (await c.get("/health")).status_code == 429


@pytest.fixture
def outage_apps(own_redis: RedisServer, prefix: str) -> Callable[..., FastAPI]:
    def make(**kw: Any) -> FastAPI:
        app = FastAPI()

        @app.get("/deco")
        @limit("5/minute", redis_url=own_redis.url, prefix=prefix, **kw)
        async def deco() -> str:
            return "deco"

        @app.get("/dep", dependencies=[Depends(RateLimit("5/minute", redis_url=own_redis.url, prefix=prefix, **kw))])
        async def dep() -> str:
            return "dep"

        @app.get("/mw")
        async def mw() -> str:
            return "mw"

        app.add_middleware(
            RateLimitMiddleware, rules=[Rule("/mw", "5/minute")], redis_url=own_redis.url, prefix=prefix, **kw
        )
        return app

    return make


@pytest.mark.parametrize("fallback", ["local", "open", "error"])
async def test_redis_outage_is_never_a_500(
    own_redis: RedisServer, outage_apps: Callable[..., FastAPI], fallback: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = outage_apps(fallback=fallback, timeout_ms=200)
    async with client(app) as c:
        for path in ("/deco", "/dep", "/mw"):
            assert (await c.get(path)).status_code == 200
        own_redis.kill()
        with caplog.at_level(logging.WARNING, logger="floodwall"):
            for path in ("/deco", "/dep", "/mw"):
                r = await c.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text)
                assert r.text == json.dumps(path[1:])
    messages = " ".join(r.getMessage() for r in caplog.records)
    if fallback == "error":
        assert "store failed" in messages
    else:
        assert "fallback policy is deciding" in messages


async def test_on_store_error_hook(outage_apps: Callable[..., FastAPI], own_redis: RedisServer) -> None:
    def unavailable(request: Request, d: HttpDecision) -> Response:
        assert d.store_errors and d.allowed
        return PlainTextResponse("limiter down", status_code=503)

    app = FastAPI()

    @app.get("/deco")
    @limit("5/minute", redis_url=own_redis.url, fallback="error", timeout_ms=200, on_store_error=unavailable)
    async def deco() -> str:
        return "deco"

    @app.get(
        "/dep",
        dependencies=[
            Depends(
                RateLimit(
                    "5/minute", redis_url=own_redis.url, fallback="error", timeout_ms=200, on_store_error=unavailable
                )
            )
        ],
    )
    async def dep() -> str:
        return "dep"

    own_redis.kill()
    async with client(app) as c:
        for path in ("/deco", "/dep"):
            r = await c.get(path)
            assert (r.status_code, r.text) == (503, "limiter down")


async def test_unreachable_redis_from_the_start_is_not_a_500() -> None:
    app = app_with_middleware(limits="5/minute", redis_url=closed_port_url(), fallback="error", timeout_ms=200)
    async with client(app) as c:
        r = await c.get("/health")
        assert r.status_code == 200 and r.text == '"up"'


async def test_middleware_and_rules_take_max_identities() -> None:
    # The embedded store's cap is a limiter option like any other, for the app's limits and a rule's.
    app = FastAPI()
    app.add_middleware(
        RateLimitMiddleware,
        limits="2/minute",
        max_identities=100,
        rules=[Rule("/login", "1/minute", max_identities=50)],
    )

    @app.get("/login")
    async def login() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as c:
        assert [(await c.get("/login")).status_code for _ in range(2)] == [200, 429]
    with pytest.raises(ConfigError, match="max_identities"):
        HttpRule("r", Limiter("1/minute", max_identities=0))
