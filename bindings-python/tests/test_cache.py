"""The core's local cache layer from Python (`cache=`): calls it answers come back as awaitables
that are already done, the rest go to Redis; admission stays within the limit either way."""

from __future__ import annotations

import asyncio

import pytest

from floodwall import Limiter

from conftest import STRICT, RedisServer, admitted_by_threads

ALGORITHMS = ["sliding_window", "sliding_log", "token_bucket"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_asyncio_1000_at_limit_100_with_cache(
    redis_server: RedisServer, prefix: str, algorithm: str, async_path: str
) -> None:
    limiter = Limiter("100/hour", algorithm=algorithm, redis_url=redis_server.url, prefix=prefix, cache=True, **STRICT)  # type: ignore[arg-type]
    assert limiter.cache_stats() is not None
    decisions = await asyncio.gather(*(limiter.check("hot") for _ in range(1000)))
    assert sum(d.allowed for d in decisions) == 100
    assert {d.source for d in decisions} <= {"redis", "cache", "lease"}
    # Denied now: later calls are answered by the denial cache, without Redis.
    later = [await limiter.check("hot") for _ in range(20)]
    assert not any(d.allowed for d in later)
    assert "cache" in {d.source for d in later}


def test_threads_1000_at_limit_100_with_cache(redis_server: RedisServer, prefix: str) -> None:
    limiter = Limiter("100/hour", redis_url=redis_server.url, prefix=prefix, cache=True, **STRICT)  # type: ignore[arg-type]
    assert admitted_by_threads(limiter, "hot", workers=16) == 100


async def test_a_hot_identity_is_served_from_leases_within_the_limit(redis_server: RedisServer, prefix: str) -> None:
    # 1% of 10,000 is 100 permits of drift budget: enough for leases.
    limiter = Limiter("10000/hour", redis_url=redis_server.url, prefix=prefix, cache=True, **STRICT)  # type: ignore[arg-type]
    sources: list[str] = []
    for _ in range(20):
        batch = await asyncio.gather(*(limiter.check("hot") for _ in range(50)))
        assert all(d.allowed for d in batch)
        sources += [d.source for d in batch]
    assert "lease" in sources, sources
    # However the decisions were answered, Redis holds no more than was admitted plus the leases.
    stats = limiter.cache_stats()
    assert stats is not None and stats["leases_granted"] > 0
    peek = await limiter.peek("hot")
    assert 10000 - 1000 - 100 <= peek.remaining <= 10000 - 1000
