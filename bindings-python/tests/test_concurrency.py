"""Atomicity from Python: 1000 concurrent checks at limit 100 admit exactly 100, whether they
come from one event loop or from many threads, on Redis and on the embedded store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from floodwall import Limiter

from conftest import STRICT, RedisServer, admitted_by_threads

ALGORITHMS = ["sliding_window", "sliding_log", "token_bucket"]


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_asyncio_1000_at_limit_100(url: str | None, prefix: str, algorithm: str, async_path: str) -> None:
    limiter = Limiter("100/hour", algorithm=algorithm, redis_url=url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    decisions = await asyncio.gather(*(limiter.check("hot") for _ in range(1000)))
    assert sum(d.allowed for d in decisions) == 100
    assert {d.remaining for d in decisions if not d.allowed} == {0}
    assert {d.source for d in decisions} == {limiter.store}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_1000_at_limit_100(url: str | None, prefix: str, algorithm: str, sync_path: str) -> None:
    limiter = Limiter("100/hour", algorithm=algorithm, redis_url=url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    assert admitted_by_threads(limiter, "hot", workers=32) == 100


def test_threads_and_asyncio_together(redis_server: RedisServer, prefix: str, async_path: str, sync_path: str) -> None:
    """Sync callers in threads while an event loop awaits the same identity."""
    limiter = Limiter("100/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    counts: list[int] = []

    def sync_side() -> None:
        counts.append(sum(limiter.check_sync("hot").allowed for _ in range(250)))

    async def async_side() -> int:
        ds = await asyncio.gather(*(limiter.check("hot") for _ in range(500)))
        return sum(d.allowed for d in ds)

    threads = [threading.Thread(target=sync_side) for _ in range(2)]
    for t in threads:
        t.start()
    counts.append(asyncio.run(async_side()))
    for t in threads:
        t.join()
    assert sum(counts) == 100


async def test_many_event_loops_one_after_another(redis_server: RedisServer, prefix: str) -> None:
    """Each loop gets its own bridge; bridges of closed loops are dropped, results never cross."""
    limiter = Limiter("1000/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]

    async def some() -> list[int]:
        return [d.remaining for d in await asyncio.gather(*(limiter.check("k") for _ in range(10)))]

    seen: list[int] = []
    for _ in range(20):
        seen += await asyncio.to_thread(asyncio.run, some())
    seen += await some()
    assert sorted(seen, reverse=True) == list(range(999, 999 - 210, -1))


async def test_cancelled_awaits_do_not_break_the_others(redis_server: RedisServer, prefix: str) -> None:
    limiter = Limiter("1000/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    tasks = [asyncio.ensure_future(limiter.check("k")) for _ in range(50)]
    for t in tasks[::2]:
        t.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(d, asyncio.CancelledError) for d in done) == 25
    assert all(d.allowed for d in done if not isinstance(d, BaseException))
    assert (await limiter.check("k")).allowed


def test_uvloop(redis_server: RedisServer, prefix: str) -> None:
    """uvicorn's default loop when installed: the bridge's reader and futures work on it too."""
    uvloop = pytest.importorskip("uvloop")
    limiter = Limiter("100/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]

    async def main() -> int:
        ds = await asyncio.gather(*(limiter.check("hot") for _ in range(1000)))
        return sum(d.allowed for d in ds)

    assert uvloop.run(main()) == 100
