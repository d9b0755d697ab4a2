"""Identities a client cannot invent: API keys count apart only once verified (an allow-list,
signed keys, or the app's verify callback), and JWTs are held to a 32-byte HS256 secret, an `iat`
not in the future and, on request, an `exp`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import Depends, FastAPI

from floodwall import ConfigError, HttpDecision, HttpLimiter, HttpRule, Limiter
from floodwall.fastapi import RateLimit, RateLimitMiddleware

from conftest import closed_port_url

PEER = "203.0.113.7"
SECRET = "test-secret-for-hs256-at-least-32-bytes!"
SIGNING = b"api-key-signing-secret-of-32-bytes-or-more"
KEY_SECRET = "bucket-key-secret-of-at-least-32-bytes"


def client(app: FastAPI, peer: str = PEER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def signed_key(key_id: str, secret: bytes = SIGNING) -> str:
    """The documented format, made with the standard library only."""
    return f"{key_id}.{hmac.new(secret, key_id.encode(), hashlib.sha256).hexdigest()}"


def keyed_app(scope: str, api_keys: dict[str, Any], limits: str = "2/minute") -> FastAPI:
    app = FastAPI()
    dep = RateLimit(limits, key=scope, api_keys={"key_secret": KEY_SECRET, **api_keys})

    @app.get("/")
    async def root(d: HttpDecision = Depends(dep)) -> dict[str, Any]:
        return {"key": d.key, "rejected": d.api_key_rejected}

    return app


@pytest.mark.parametrize("scope", ["api_key", "api_key+ip"])
async def test_fifty_invented_api_keys_from_one_ip_share_its_bucket(scope: str) -> None:
    # The review's bypass: 50 random X-API-Key values at 2/minute all passed.
    app = keyed_app(scope, {"allow": ["sk_live_real"]})
    async with client(app) as c:
        codes = [(await c.get("/", headers={"X-API-Key": secrets.token_hex(16)})).status_code for _ in range(50)]
        assert codes.count(200) == 2 and codes.count(429) == 48
        r = await c.get("/", headers={"X-API-Key": "sk_live_real"})
        assert r.status_code == 200
        assert r.json()["key"].startswith("apikey:#") and not r.json()["rejected"]


async def test_middleware_with_invented_keys() -> None:
    app = FastAPI()

    @app.get("/data")
    async def data() -> str:
        return "d"

    app.add_middleware(RateLimitMiddleware, limits="2/minute", key="api_key", api_keys={"signing_secret": SIGNING})
    async with client(app) as c:
        codes = [(await c.get("/data", headers={"X-API-Key": f"k{i}.{'0' * 64}"})).status_code for i in range(50)]
        assert codes.count(200) == 2
        assert (await c.get("/data", headers={"X-API-Key": signed_key("acct_1")})).status_code == 200


async def test_signed_keys_bucket_by_id() -> None:
    app = keyed_app("api_key", {"signing_secret": SIGNING}, limits="9/minute")
    async with client(app) as c:
        r = await c.get("/", headers={"X-API-Key": signed_key("acct_42")})
        assert r.json() == {"key": "apikey:acct_42", "rejected": False}
        for forged in (
            signed_key("acct_42", b"x" * 32),
            signed_key("acct_42")[:-1] + "0",
            "acct_42",
            signed_key("acct_42").replace("acct_42", "acct_43"),
        ):
            r = await c.get("/", headers={"X-API-Key": forged})
            assert r.json()["rejected"] and r.json()["key"] == f"ip:{PEER}", forged


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_verify_callback(style: str, caplog: pytest.LogCaptureFixture) -> None:
    accounts = {"k-a1": "acct-1", "k-a1-second": "acct-1", "k-self": True}
    calls: list[str] = []

    def lookup(key: str) -> str | bool | None:
        calls.append(key)
        if key == "k-boom":
            raise RuntimeError("database down")
        return accounts.get(key)

    async def alookup(key: str) -> str | bool | None:
        return lookup(key)

    app = keyed_app("api_key", {"verify": lookup if style == "sync" else alookup})
    seen: list[Any] = []
    async with client(app) as c:
        for key in ("k-a1", "k-a1-second", "k-self", "unknown", "k-boom", "k-boom"):
            r = await c.get("/", headers={"X-API-Key": key})
            seen.append(r.json() if r.status_code == 200 else r.status_code)
        # No key: no call, the same IP bucket.
        no_key = (await c.get("/")).status_code
    assert seen[0] == seen[1] == {"key": "apikey:acct-1", "rejected": False}
    assert seen[2]["key"].startswith("apikey:#") and not seen[2]["rejected"]
    assert seen[3] == {"key": f"ip:{PEER}", "rejected": True}
    # A failing callback is a failed lookup, never a 500; then the IP bucket (2/minute) is spent.
    assert seen[4] == {"key": f"ip:{PEER}", "rejected": True}
    assert seen[5] == 429 and no_key == 429
    assert calls == ["k-a1", "k-a1-second", "k-self", "unknown", "k-boom", "k-boom"]
    assert sum("verify callback raised" in rec.getMessage() for rec in caplog.records) == 1, "logged once"


def test_api_key_scope_without_verification_is_refused() -> None:
    with pytest.raises(ConfigError, match="no way to verify keys"):
        RateLimit("2/minute", key="api_key")
    with pytest.raises(ConfigError, match="no way to verify keys"):
        RateLimitMiddleware(FastAPI(), limits="2/minute", key="api_key+ip")
    with pytest.raises(ConfigError, match="no way to verify keys"):
        HttpLimiter([HttpRule("r", Limiter("1/s"), key="api_key")], api_keys={})
    with pytest.raises(ConfigError, match="verify"):
        RateLimit("2/minute", key="api_key", api_keys={"verify": "not callable"})
    with pytest.raises(ConfigError, match="signing secret"):
        RateLimit("2/minute", key="api_key", api_keys={"signing_secret": "short"})
    with pytest.raises(ConfigError, match="list of keys"):
        RateLimit("2/minute", key="api_key", api_keys={"allow": "sk_live_1"})
    with pytest.raises(ConfigError, match="allowed"):
        RateLimit("2/minute", key="api_key", api_keys={"allowed": ["k"]})


def test_hashed_keys_in_redis_need_a_shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOODWALL_KEY_SECRET", raising=False)
    url = closed_port_url()
    with pytest.raises(ConfigError, match="FLOODWALL_KEY_SECRET"):
        RateLimit("2/minute", key="api_key", api_keys={"allow": ["k"]}, redis_url=url)
    # With a shared secret, or with signed keys (bucketed by id), it is fine.
    RateLimit("2/minute", key="api_key", api_keys={"allow": ["k"], "key_secret": KEY_SECRET}, redis_url=url)
    RateLimit("2/minute", key="api_key", api_keys={"signing_secret": SIGNING}, redis_url=url)
    monkeypatch.setenv("FLOODWALL_KEY_SECRET", KEY_SECRET)
    RateLimit("2/minute", key="api_key", api_keys={"allow": ["k"]}, redis_url=url)
    monkeypatch.setenv("FLOODWALL_KEY_SECRET", "short")
    with pytest.raises(ConfigError, match="FLOODWALL_KEY_SECRET"):
        RateLimit("2/minute", key="api_key", api_keys={"allow": ["k"]}, redis_url=url)


def test_two_instances_with_one_secret_agree() -> None:
    def key_of(secret: str) -> str | None:
        h = HttpLimiter(
            [HttpRule("r", Limiter("5/s"), key="api_key")], api_keys={"allow": ["sk_1"], "key_secret": secret}
        )
        return h.decide_sync("GET", "/", PEER, api_key="sk_1").key

    assert key_of(KEY_SECRET) == key_of(KEY_SECRET)
    assert key_of(KEY_SECRET) != key_of(KEY_SECRET[::-1])
    assert "sk_1" not in (key_of(KEY_SECRET) or "")


# --- JWT ------------------------------------------------------------------------------------------


def test_short_hs256_secret_is_refused() -> None:
    for short in ("s", "dev-secret-change-me", b"x" * 31):
        with pytest.raises(ConfigError, match="at least 32 bytes") as e:
            RateLimit("1/minute", key="user", jwt={"secret": short})
        assert "dev-secret" not in str(e.value)
    RateLimit("1/minute", key="user", jwt={"secret": b"x" * 32})


def test_future_iat_and_require_exp() -> None:
    now = int(time.time())
    h = HttpLimiter([HttpRule("r", Limiter("100/minute"), key="user")], jwt={"secret": SECRET})
    strict = HttpLimiter(
        [HttpRule("r", Limiter("100/minute"), key="user")], jwt={"secret": SECRET, "require_exp": True}
    )
    lenient = HttpLimiter([HttpRule("r", Limiter("100/minute"), key="user")], jwt={"secret": SECRET, "leeway": 120})

    def tok(**claims: Any) -> str:
        return "Bearer " + pyjwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")

    assert h.verified_user(tok(iat=now)) == "alice"
    assert h.verified_user(tok(iat=now + 600)) is None
    assert lenient.verified_user(tok(iat=now + 60)) == "alice"
    assert h.verified_user(tok()) == "alice"
    assert strict.verified_user(tok()) is None
    assert strict.verified_user(tok(exp=now + 60)) == "alice"
    with pytest.raises(ConfigError, match="require_exp"):
        HttpLimiter([HttpRule("r", Limiter("1/s"), key="user")], jwt={"secret": SECRET, "require_exp": "yes"})
