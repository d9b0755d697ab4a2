"""Shared fixtures: private redis-server processes on free loopback ports (never the shared
server on 6379), and the conformance scenarios of tests/conformance."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from floodwall import Limiter

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "tests" / "conformance"


# Tests that count exact decisions must hear about every Redis failure instead of a fallback
# answering, and must not trip the breaker because a loaded 2-core machine was slow.
def admitted_by_threads(limiter: Limiter, key: str, workers: int, calls: int = 1000) -> int:
    """`calls` (rounded up to a multiple of `workers`) check_sync calls on `key` from `workers` threads
    released together; how many were allowed."""
    start = threading.Barrier(workers)

    def worker(_: int) -> int:
        start.wait()
        return sum(limiter.check_sync(key).allowed for _ in range(calls // workers + 1))

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(worker, range(workers)))


STRICT: dict[str, object] = {
    "fallback": "error",
    "timeout_ms": 10_000,
    "breaker": {"slow_call_ms": 10_000, "failure_threshold": 1_000},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_command(port: int, *args: str) -> bytes:
    """One command over a fresh connection; returns the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(req.encode())
        return s.makefile("rb").readline().rstrip(b"\r\n")


class RedisServer:
    """A redis-server with no persistence, stopped by `stop()`; `kill()` simulates an outage."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="floodwall-py-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                return
        raise RuntimeError("could not start redis-server (is it installed?)")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _spawn(self) -> bool:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis_command(self.port, "PING") == b"+PONG":
                    return True
            except OSError:
                pass
            if self.proc.poll() is not None:
                return False  # the port was taken between free_port() and bind
            time.sleep(0.02)  # readiness poll, bounded by the deadline
        return False

    def command(self, *args: str) -> bytes:
        return redis_command(self.port, *args)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server for one test, which it may kill."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(params=["loop_bridge", "pyo3_async_runtimes"])
def async_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test over both ways async results reach the event loop: the batched loop bridge
    (the default) and pyo3-async-runtimes on the fork-safe runtime."""
    from floodwall import _floodwall

    _floodwall._use_loop_bridge(request.param == "loop_bridge")
    yield request.param
    _floodwall._use_loop_bridge(True)


@pytest.fixture(params=["caller_thread", "runtime"])
def sync_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test over both ways a sync call reaches Redis: on the calling thread over its own
    connection (the default) and handed to the shared runtime."""
    from floodwall import _floodwall

    _floodwall._sync_on_caller_thread(request.param == "caller_thread")
    yield request.param
    _floodwall._sync_on_caller_thread(True)


@pytest.fixture
def prefix() -> str:
    """A per-test key prefix, so tests never share Redis keys."""
    return "t" + uuid.uuid4().hex[:12]


def closed_port_url() -> str:
    """A Redis URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}"
