"""Fork safety: gunicorn and uvicorn fork workers after the parent may have used a limiter.
A child must get a working runtime and connection of its own, never hang on the parent's."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from floodwall import Limiter

from conftest import STRICT, RedisServer

CHILD_TIMEOUT_S = 20
# Forks made while the parent is busy: each lands at a random point of its runtime threads' work.
FORKS_WHILE_BUSY = 40


def in_child(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child; return what it returned (JSON), fail if it hangs or raises."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out = {"ok": fn()}
        except BaseException as e:  # report everything to the parent
            out = {"error": repr(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], CHILD_TIMEOUT_S)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child hung for {CHILD_TIMEOUT_S} s")
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b'{"error": "child exited without a result"}')
    assert "error" not in out, out["error"]
    return out["ok"]


def child_checks(limiter: Limiter) -> list[int]:
    sync = limiter.check_sync("shared")

    async def main() -> tuple[int, int]:
        a = await limiter.check("shared")
        p = await limiter.peek("shared")
        return a.remaining, p.remaining

    a, p = asyncio.run(main())
    return [sync.remaining, a, p]


def test_child_after_parent_used_redis_sync_and_async(
    redis_server: RedisServer, prefix: str, async_path: str, sync_path: str
) -> None:
    limiter = Limiter("10/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    assert limiter.check_sync("shared").remaining == 9
    assert asyncio.run(_check(limiter)) == 8
    # The child shares the Redis counts, through a connection and runtime of its own.
    assert in_child(lambda: child_checks(limiter)) == [7, 6, 6]
    # The parent is unaffected by the child.
    assert limiter.check_sync("shared").remaining == 5
    assert asyncio.run(_check(limiter)) == 4


async def _check(limiter: Limiter) -> int:
    return (await limiter.check("shared")).remaining


def test_child_of_a_child(redis_server: RedisServer, prefix: str, async_path: str) -> None:
    limiter = Limiter("10/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    limiter.check_sync("shared")

    def grandchild() -> Any:
        limiter.check_sync("shared")
        return in_child(lambda: child_checks(limiter))

    assert in_child(grandchild) == [7, 6, 6]


def test_child_of_a_parent_that_never_used_it(redis_server: RedisServer, prefix: str, async_path: str) -> None:
    limiter = Limiter("10/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    assert in_child(lambda: child_checks(limiter)) == [9, 8, 8]


def test_memory_limiter_in_child_keeps_the_parent_counts() -> None:
    limiter = Limiter("10/hour")
    limiter.check_sync("shared")
    # The embedded store is per process: the child starts from a copy of the parent's counts.
    assert in_child(lambda: child_checks(limiter)) == [8, 7, 7]
    assert limiter.check_sync("shared").remaining == 8


def test_children_forked_while_the_parent_is_busy(redis_server: RedisServer, prefix: str, sync_path: str) -> None:
    """Fork while the parent's runtime threads are mid-call: a lock one of them held at that
    instant (the store's queue, pyo3's deferred-decref pool, ...) stays held forever in the child.
    Each child must still decide, on a connection and runtime of its own."""
    limiter = Limiter("1000000/hour", redis_url=redis_server.url, prefix=prefix, **STRICT)  # type: ignore[arg-type]
    stop = threading.Event()

    def busy_async() -> None:
        async def main() -> None:
            while not stop.is_set():
                await asyncio.gather(*(limiter.check(f"busy{i}") for i in range(32)))

        asyncio.run(main())

    def busy_sync() -> None:
        while not stop.is_set():
            limiter.check_sync("busy-sync")

    threads = [threading.Thread(target=busy_async), threading.Thread(target=busy_sync)]
    for t in threads:
        t.start()
    try:
        for _ in range(FORKS_WHILE_BUSY):
            remaining = in_child(lambda: child_checks(limiter))
            assert all(0 < r < 1_000_000 for r in remaining), remaining
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_child_starts_with_a_cache_of_its_own(redis_server: RedisServer, prefix: str) -> None:
    """The cache layer is per process: a child spending its parent's leases would admit the same
    permits twice, and one joining its parent's in-flight calls would wait forever."""
    limiter = Limiter("10000/hour", redis_url=redis_server.url, prefix=prefix, cache=True, **STRICT)  # type: ignore[arg-type]

    async def hot() -> list[str]:
        sources: list[str] = []
        for _ in range(10):
            sources += [d.source for d in await asyncio.gather(*(limiter.check("hot") for _ in range(50)))]
        return sources

    assert "lease" in asyncio.run(hot())
    parent = limiter.cache_stats()
    assert parent is not None and parent["leases_granted"] > 0 and parent["entries"] > 0

    def child() -> Any:
        before = limiter.cache_stats()
        first = limiter.check_sync("hot")
        return [before["entries"], before["leases_granted"], first.source, first.allowed]

    # its first check of the hot identity goes to Redis, not to the parent's lease
    assert in_child(child) == [0, 0, "redis", True]
