"""The shared conformance scenarios (tests/conformance/*.json, format in its README), on the
embedded store with a ManualClock and on Redis with the same clock standing in for TIME."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from floodwall import Decision, Limiter, ManualClock

from conftest import CONFORMANCE, STRICT, RedisServer

T0_MS = 1_728_000_000_000
SCENARIOS = sorted(CONFORMANCE.glob("*.json"))


def test_scenarios_exist() -> None:
    assert len(SCENARIOS) >= 5


def check_expect(where: str, d: Decision, expect: dict[str, Any]) -> None:
    for field, want in expect.items():
        if field in ("retry_after_ms", "reset_after_ms"):
            got = getattr(d, field[: -len("_ms")])
            if want is None:
                assert got is None, f"{where}: {field} = {got}, want None ({d!r})"
            else:
                assert got is not None, f"{where}: {field} is None, want {want} ({d!r})"
                assert abs(got * 1000 - want) <= 1, f"{where}: {field} = {got * 1000}, want {want} ({d!r})"
        elif field in ("allowed", "remaining", "limit", "limited_by"):
            got = getattr(d, field)
            assert got == want, f"{where}: {field} = {got!r}, want {want!r} ({d!r})"
        else:
            raise AssertionError(f"{where}: unknown expect field {field!r}")


async def run_scenario(path: Path, redis_url: str | None) -> None:
    sc = json.loads(path.read_text())
    clock = ManualClock(T0_MS)
    limiter = Limiter(
        sc["limits"],
        algorithm=sc["algorithm"],
        redis_url=redis_url,
        clock=clock,
        prefix="conf" + uuid.uuid4().hex[:12],
        **STRICT,
    )
    assert limiter.store == ("redis" if redis_url else "memory")
    for i, step in enumerate(sc["steps"]):
        clock.set(T0_MS + step["at_ms"])
        op, key = step.get("op", "check"), step["key"]
        for r in range(step.get("repeat", 1)):
            where = f"{path.name} step {i} repeat {r} ({op} at {step['at_ms']} ms)"
            # Alternate the async and sync forms so both walk the same timeline.
            sync = (i + r) % 2 == 1
            if op == "reset":
                limiter.reset_sync(key) if sync else await limiter.reset(key)
                continue
            if op == "peek":
                d = limiter.peek_sync(key) if sync else await limiter.peek(key)
            elif op == "check":
                cost = step.get("cost", 1)
                d = limiter.check_sync(key, cost) if sync else await limiter.check(key, cost)
            else:
                raise AssertionError(f"{where}: unknown op {op!r}")
            assert d.source == limiter.store, f"{where}: decided by {d.source}"
            check_expect(where, d, step.get("expect", {}))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_memory(path: Path) -> None:
    await run_scenario(path, None)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_redis(path: Path, redis_server: RedisServer) -> None:
    await run_scenario(path, redis_server.url)
