"""Fork safety: gunicorn and uvicorn fork workers after the parent may have used a limiter.
A child must get a working runtime and connection of its own, never hang on the parent's."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
from typing import Any, Callable

import pytest

from floodwall import Limiter

from conftest import STRICT, RedisServer

CHILD_TIMEOUT_S = 20


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
