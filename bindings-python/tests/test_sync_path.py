"""Sync calls on Redis run on the calling thread over its own connection: the limiter's breaker
still governs them, and what they start in the background runs on the shared runtime."""

from __future__ import annotations

import time

from floodwall import Limiter

from conftest import RedisServer


def test_a_breaker_opened_by_a_sync_call_is_health_checked(own_redis: RedisServer) -> None:
    # Only the health check can move this breaker on (open_ms is a minute): if it were left on the
    # calling thread's runtime, which runs only during that thread's calls, it would never run.
    # The deadline (1 s) is far past a loopback call on a loaded machine, so the calls before and
    # after the pause answer from Redis; the pause (3 s) is far past the deadline, so the call
    # during it cannot.
    limiter = Limiter(
        "100/second",
        redis_url=own_redis.url,
        timeout_ms=1_000,
        fallback="open",
        breaker={"failure_threshold": 1, "open_ms": 60_000, "health_check_ms": 50, "slow_call_ms": 60_000},
    )
    assert limiter.check_sync("k").source == "redis"  # this thread's connection is made
    assert own_redis.command("CLIENT", "PAUSE", "3000", "ALL") == b"+OK"
    assert limiter.check_sync("k").source == "fallback"
    assert limiter.breaker_state == "open"
    deadline = time.monotonic() + 10
    while limiter.breaker_state == "open" and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for the health check, bounded by the deadline
    assert limiter.breaker_state == "half_open"
    assert limiter.check_sync("k").source == "redis"
