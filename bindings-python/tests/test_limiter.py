"""The Limiter API: decisions and their fields, peek/reset, sync and async alike, on the
embedded store and on Redis; and the errors (ConfigError, StoreError)."""

from __future__ import annotations

import asyncio

import pytest

import floodwall
from floodwall import ConfigError, Decision, FloodwallError, Limiter, ManualClock, StoreError, Window

from conftest import STRICT, RedisServer, closed_port_url

T0_MS = 1_728_000_000_000


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, prefix: str):  # type: ignore[no-untyped-def]
    """Limiter factory on each store; both decide on a ManualClock so timings are exact."""
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None

    def build(limits: str | list[str], **kw: object) -> tuple[Limiter, ManualClock]:
        clock = ManualClock(T0_MS)
        return Limiter(limits, redis_url=url, prefix=prefix, clock=clock, **{**STRICT, **kw}), clock  # type: ignore[arg-type]

    return build


def test_exports_and_hierarchy() -> None:
    assert issubclass(ConfigError, FloodwallError) and issubclass(StoreError, FloodwallError)
    assert issubclass(FloodwallError, Exception)
    assert floodwall.__version__
    assert Limiter.__module__ == "floodwall._floodwall"


async def test_decision_fields_async_and_sync(make) -> None:  # type: ignore[no-untyped-def]
    limiter, clock = make(["5/second", "100/minute"])
    d = await limiter.check("user:42")
    assert isinstance(d, Decision)
    assert (d.allowed, d.limit, d.remaining, d.limited_by, d.retry_after) == (True, 5, 4, None, None)
    assert d.source == limiter.store
    # Sliding window: a request counts, weighted, until the end of the window after its own.
    assert d.reset_after == pytest.approx(2.0, abs=1e-3)
    assert d.at == pytest.approx(T0_MS / 1000)
    assert bool(d) is True
    [w1, w2] = d.windows
    assert isinstance(w1, Window)
    assert (w1.limit, w1.max, w1.window, w1.policy, w1.remaining) == ("5/second", 5, 1.0, "per-second", 4)
    assert (w2.limit, w2.remaining, w2.retry_after) == ("100/minute", 99, None)
    d = limiter.check_sync("user:42", cost=4)
    assert (d.allowed, d.remaining) == (True, 0)
    d = limiter.check_sync("user:42")
    assert not d.allowed and not bool(d)
    assert d.limited_by == "5/second" and d.limit == 5 and d.remaining == 0
    # 5 in this window: the next admits one once their weight falls to 4, 0.2 s into it.
    assert d.retry_after == pytest.approx(1.2, abs=1e-3)
    assert d.windows[0].retry_after == pytest.approx(d.retry_after)
    assert d.windows[1].retry_after is None and d.windows[1].remaining == 95
    as_dict = d.to_dict()
    assert as_dict["allowed"] is False and as_dict["limited_by"] == "5/second"
    assert as_dict["windows"][0] == {
        "limit": "5/second",
        "remaining": 0,
        "reset_after": d.windows[0].reset_after,
        "retry_after": d.retry_after,
    }
    r = repr(d)
    assert r.startswith("Decision(allowed=False, limit=5, remaining=0,") and 'limited_by="5/second"' in r
    # Time passes: allowed again.
    clock.advance(2000)
    assert (await limiter.check("user:42")).allowed


async def test_peek_consumes_nothing_and_reset_forgets(make) -> None:  # type: ignore[no-untyped-def]
    limiter, _ = make("2/minute")
    assert (await limiter.peek("k")).remaining == 2
    assert limiter.peek_sync("k").remaining == 2
    await limiter.check("k")
    limiter.check_sync("k")
    assert not (await limiter.peek("k")).allowed
    assert not limiter.check_sync("k").allowed
    assert await limiter.reset("k") is None
    assert (await limiter.check("k")).remaining == 1
    assert limiter.reset_sync("k") is None
    assert limiter.check_sync("k").remaining == 1


async def test_identities_are_independent(make) -> None:  # type: ignore[no-untyped-def]
    limiter, _ = make("1/hour")
    assert (await limiter.check("a")).allowed
    assert not (await limiter.check("a")).allowed
    assert (await limiter.check("b")).allowed


@pytest.mark.parametrize("algorithm", ["sliding_window", "sliding_log", "token_bucket", "gcra"])
async def test_algorithms(make, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    limiter, _ = make("3/second", algorithm=algorithm)
    got = [(await limiter.check("k")).allowed for _ in range(4)]
    assert got == [True, True, True, False]
    assert limiter.algorithm == ("token_bucket" if algorithm == "gcra" else algorithm)


def test_limiter_properties_and_repr(redis_server: RedisServer) -> None:
    m = Limiter("5/second; 100 per minute")
    assert m.limits == ["5/second", "100/minute"] and m.store == "memory" and m.prefix == "floodwall"
    assert m.max_cost == 5 and m.clock_offset is None
    assert repr(m) == 'Limiter(["5/second", "100/minute"], algorithm="sliding_window", store=\'memory\')'
    r = Limiter(["10/s"], redis_url="redis://user:secret@127.0.0.1:1/0")
    assert "secret" not in repr(r) and r.store == "redis"
    assert r.fallback == "local" and r.breaker_state == "closed" and m.breaker_state is None
    live = Limiter("10/s", redis_url=redis_server.url, **STRICT)  # type: ignore[arg-type]
    live.check_sync("x")
    offset = live.clock_offset
    assert offset is not None and abs(offset) < 1.0


@pytest.mark.parametrize("bad", ["ten/second", "0/second", "5/fortnight", "5", "-1/second"])
def test_bad_limit_string_raises_config_error_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        Limiter(["5/second", bad])
    assert repr(bad)[1:-1] in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"limits": []}, "limits"),
        ({"limits": 5}, "limits"),
        ({"limits": "5/second", "algorithm": "leaky"}, "leaky"),
        ({"limits": "5/second", "redis_url": "http://localhost"}, "http://localhost"),
        ({"limits": "5/second", "prefix": ""}, "prefix"),
        ({"limits": ["5/second", "10/second"]}, "share one window"),
        ({"limits": "20000/second", "algorithm": "sliding_log"}, "20000/second"),
    ],
)
def test_bad_config_raises_config_error(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Limiter(**kwargs)  # type: ignore[arg-type]


async def test_bad_cost_and_key(make) -> None:  # type: ignore[no-untyped-def]
    limiter, _ = make("5/second")
    for cost in (0, -3, 6):
        with pytest.raises(ConfigError, match="cost"):
            limiter.check_sync("k", cost)
        with pytest.raises(ConfigError, match="cost"):
            await limiter.check("k", cost)
    with pytest.raises(ConfigError, match="key"):
        await limiter.check("")
    with pytest.raises(ConfigError, match="key"):
        limiter.peek_sync("")
    with pytest.raises(TypeError):
        limiter.check_sync(42)  # type: ignore[arg-type]


async def test_unreachable_redis_raises_store_error_when_asked() -> None:
    limiter = Limiter("5/second", redis_url=closed_port_url(), timeout_ms=300, fallback="error")
    assert limiter.fallback == "error"
    with pytest.raises(StoreError, match="127.0.0.1"):
        limiter.check_sync("k")
    with pytest.raises(StoreError):
        await limiter.check("k")
    with pytest.raises(StoreError):
        await limiter.peek("k")
    with pytest.raises(StoreError):
        limiter.reset_sync("k")
    with pytest.raises(StoreError):
        await limiter.connect()
    with pytest.raises(FloodwallError):
        limiter.connect_sync()
    assert limiter.metrics()["redis_errors"] + limiter.metrics()["redis_rejected_open"] >= 4


async def test_unreachable_redis_default_fallback_enforces_locally() -> None:
    limiter = Limiter("3/minute", redis_url=closed_port_url(), timeout_ms=300)
    got = [await limiter.check("k") for _ in range(4)]
    assert [d.allowed for d in got] == [True, True, True, False]
    assert {d.source for d in got} == {"fallback"}
    assert limiter.metrics()["decisions"]["fallback_allowed"] == 3


async def test_fallback_modes() -> None:
    url = closed_port_url()
    d = await Limiter("1/minute", redis_url=url, fallback="open").check("k")
    d2 = await Limiter("1/minute", redis_url=url, fallback="open").check("k")
    assert d.allowed and d2.allowed and d.source == "fallback"
    closed = Limiter("1/minute", redis_url=url, fallback={"mode": "closed", "retry_after_ms": 500})
    d = closed.check_sync("k")
    assert not d.allowed and d.retry_after == pytest.approx(0.5) and d.source == "fallback"
    shared = Limiter("10/minute", redis_url=url, fallback={"mode": "local", "expected_instances": 5})
    assert [shared.check_sync("k").allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"fallback": "sometimes"}, "sometimes"),
        ({"fallback": {"retry_after_ms": 5}}, "mode"),
        ({"fallback": {"mode": "open", "retry_after_ms": 5}}, "retry_after_ms"),
        ({"fallback": {"mode": "closed", "retry_after_ms": 0}}, "retry_after_ms"),
        ({"fallback": 3}, "fallback"),
        ({"breaker": {"slow_call_ratio": 2.0}}, "slow_call_ratio"),
        ({"breaker": {"bogus": 1}}, "bogus"),
        ({"breaker": {"open_ms": "soon"}}, "open_ms"),
        ({"timeout_ms": 0}, "timeout"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file"),
    ],
)
def test_bad_redis_options_raise_config_error(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Limiter("5/second", redis_url="redis://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


async def test_redis_outage_raises_when_asked(own_redis: RedisServer) -> None:
    limiter = Limiter("100/second", redis_url=own_redis.url, **STRICT)  # type: ignore[arg-type]
    await limiter.connect()
    assert (await limiter.check("k")).source == "redis"
    own_redis.kill()
    with pytest.raises(StoreError):
        await limiter.check("k")
    with pytest.raises(StoreError):
        limiter.check_sync("k")


async def test_manual_clock() -> None:
    c = ManualClock(1000)
    assert c.now_ms == 1000
    c.advance(500)
    assert c.now_ms == 1500
    c.set(T0_MS)
    assert c.now_ms == T0_MS
    c.advance(0.25)
    assert c.now_ms == pytest.approx(T0_MS + 0.25)
    assert abs(ManualClock().now_ms / 1000 - __import__("time").time()) < 60
    with pytest.raises(ConfigError):
        c.advance(-1)
    with pytest.raises(ConfigError):
        c.set(float("nan"))


async def test_memory_store_awaitable_composes_with_asyncio() -> None:
    limiter = Limiter("3/minute")
    got = await asyncio.gather(*(limiter.check("k") for _ in range(4)))
    assert [d.allowed for d in got] == [True, True, True, False]
    got = await asyncio.wait_for(limiter.peek("k"), timeout=5)
    assert not got.allowed


@pytest.mark.parametrize("where", ["call", "sync", "async", "in_place"])
async def test_a_panic_becomes_floodwall_error(where: str, async_path: str) -> None:
    from floodwall import _floodwall

    with pytest.raises(FloodwallError, match="internal error.*test panic"):
        out = _floodwall._panic(where)
        await out


def test_check_sync_releases_the_gil(own_redis: RedisServer) -> None:
    """While check_sync waits on a stalled Redis, other Python threads run."""
    import threading
    import time

    limiter = Limiter("100/second", redis_url=own_redis.url, **STRICT)  # type: ignore[arg-type]
    limiter.check_sync("k")  # connected
    ticks = 0
    stop = False

    def spin() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    assert own_redis.command("CLIENT", "PAUSE", "500", "ALL") == b"+OK"
    before, t0 = ticks, time.monotonic()
    assert limiter.check_sync("k").allowed
    waited, during = time.monotonic() - t0, ticks - before
    stop = True
    t.join()
    assert waited >= 0.3, "Redis did not stall the call"
    assert during > 10_000, f"the other thread ran {during} times in {waited:.2f} s"


@pytest.mark.parametrize("bad", [0, -3])
def test_max_identities_below_one_is_refused_by_name(bad: int) -> None:
    with pytest.raises(ConfigError, match=f'max_identities "{bad}"'):
        Limiter("5/hour", max_identities=bad)


async def test_max_identities_caps_the_store_and_an_abuser_that_keeps_sending_stays_denied() -> None:
    limiter = Limiter("5/hour", max_identities=200, clock=ManualClock(T0_MS))
    for _ in range(5):
        assert (await limiter.check("abuser")).allowed
    for i in range(5_000):
        assert (await limiter.check(f"flood:{i}")).allowed
        if i % 20 == 19:
            assert not (await limiter.check("abuser")).allowed, f"after {i + 1} new identities"
