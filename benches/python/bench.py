"""floodwall vs `limits` from Python, side by side against one private redis-server.

Decisions per second and per-call p50/p99 latency, async (asyncio, several tasks in flight, and
one at a time) and sync (one thread), for the pairs that do the same job:
  floodwall sliding_window  vs  limits SlidingWindowCounterRateLimiter  (approximate windows)
  floodwall sliding_log     vs  limits MovingWindowRateLimiter          (exact windows)
`limits` uses its async Redis storage (async+redis://, coredis) and its sync RedisStorage.

Fairness: every call decides one request for one of --keys identities at "100/second" each (so
nearly all are admitted and the moving window's lists stay short); `limits`' hit() returns only a
bool, while floodwall's check returns the whole decision (remaining, reset, retry) in the same
round trip. floodwall runs with fallback="error" and a breaker that never opens, and the script
checks afterwards that every floodwall decision came from Redis, so no local fallback inflates it.

    .venv/bin/pip install . "limits[async-redis]>=5"
    .venv/bin/python benches/python/bench.py               # --seconds 5 --concurrency 64 --keys 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import floodwall
import limits
from limits import parse
from limits.aio import strategies as aio_strategies
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.storage import RedisStorage
from limits import strategies

LIMIT = "100/second"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="floodwall-bench-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def command(self, *args: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(("*%d\r\n" % len(args) + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
            s.recv(1024)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Result:
    library: str
    algorithm: str
    mode: str
    decisions: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds


def percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    n = len(samples)
    return samples[n // 2] / 1000, samples[min(n - 1, (n * 99) // 100)] / 1000


async def run_async(call: Callable[[str], Awaitable[Any]], keys: int, concurrency: int, seconds: float) -> tuple[int, float, list[int]]:
    lat: list[int] = []
    stop = time.perf_counter() + seconds
    counter = 0

    async def worker(w: int) -> None:
        nonlocal counter
        i = w
        pc = time.perf_counter_ns
        while time.perf_counter() < stop:
            key = f"user:{i % keys}"
            t0 = pc()
            await call(key)
            lat.append(pc() - t0)
            i += concurrency
        counter += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(lat), time.perf_counter() - t0, lat


def run_sync(call: Callable[[str], Any], keys: int, seconds: float) -> tuple[int, float, list[int]]:
    lat: list[int] = []
    pc = time.perf_counter_ns
    stop = time.perf_counter() + seconds
    t_start = time.perf_counter()
    i = 0
    while time.perf_counter() < stop:
        key = f"user:{i % keys}"
        t0 = pc()
        call(key)
        lat.append(pc() - t0)
        i += 1
    return len(lat), time.perf_counter() - t_start, lat


def floodwall_limiter(url: str, algorithm: str) -> floodwall.Limiter:
    return floodwall.Limiter(
        LIMIT, algorithm=algorithm, redis_url=url, prefix=f"bench-{algorithm}-{time.monotonic_ns()}",
        fallback="error", timeout_ms=5000, breaker={"slow_call_ms": 60_000, "failure_threshold": 1_000_000},
    )


async def bench(args: argparse.Namespace, redis: Redis) -> list[Result]:
    url = f"redis://127.0.0.1:{redis.port}"
    item = parse(LIMIT)
    results: list[Result] = []
    pairs = [
        ("sliding_window", aio_strategies.SlidingWindowCounterRateLimiter, strategies.SlidingWindowCounterRateLimiter,
         "sliding-window-counter"),
        ("sliding_log", aio_strategies.MovingWindowRateLimiter, strategies.MovingWindowRateLimiter, "moving-window"),
    ]
    limiters: list[floodwall.Limiter] = []
    for fw_alg, aio_cls, sync_cls, limits_name in pairs:
        modes = [(f"async c={args.concurrency}", args.concurrency), ("async c=1", 1)]
        for mode, conc in modes:
            fw = floodwall_limiter(url, fw_alg)
            limiters.append(fw)
            await fw.connect()
            storage = AsyncRedisStorage(url.replace("redis://", "async+redis://"))
            lim = aio_cls(storage)
            await lim.hit(item, "warmup")
            for name, alg, call in (
                ("floodwall", fw_alg, fw.check),
                ("limits", limits_name, lambda k, lim=lim: lim.hit(item, k)),
            ):
                await run_async(call, args.keys, conc, min(0.5, args.seconds))  # warm up
                n, secs, lat = await run_async(call, args.keys, conc, args.seconds)
                results.append(Result(name, alg, mode, n, secs, *percentiles(lat)))
                print(fmt(results[-1]), flush=True)
            redis.command("FLUSHALL")
        fw = floodwall_limiter(url, fw_alg)
        limiters.append(fw)
        fw.connect_sync()
        sync_lim = sync_cls(RedisStorage(url))
        for name, alg, scall in (
            ("floodwall", fw_alg, fw.check_sync),
            ("limits", limits_name, lambda k, lim=sync_lim: lim.hit(item, k)),
        ):
            run_sync(scall, args.keys, min(0.5, args.seconds))
            n, secs, lat = run_sync(scall, args.keys, args.seconds)
            results.append(Result(name, alg, "sync", n, secs, *percentiles(lat)))
            print(fmt(results[-1]), flush=True)
        redis.command("FLUSHALL")
    # Every floodwall decision must have come from Redis (no fallback, no cache).
    for fw in limiters:
        decisions = fw.metrics()["decisions"]
        other = {k: v for k, v in decisions.items() if v and not k.startswith("redis_")}
        assert not other, f"floodwall decisions not from Redis: {other}"
    return results


HEADER = f"{'library':<10} {'algorithm':<24} {'mode':<12} {'decisions/s':>12} {'p50 µs':>9} {'p99 µs':>9}"


def fmt(r: Result) -> str:
    return f"{r.library:<10} {r.algorithm:<24} {r.mode:<12} {r.rate:>12,.0f} {r.p50_us:>9.0f} {r.p99_us:>9.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    p.add_argument("--concurrency", type=int, default=64, help="asyncio tasks in flight")
    p.add_argument("--keys", type=int, default=10_000, help="distinct identities, used round-robin")
    args = p.parse_args()
    redis = Redis()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    print(f"floodwall {floodwall.__version__}, limits {limits.__version__}, Python {platform.python_version()}, "
          f"redis-server {version}, {os.cpu_count()} cores, limit {LIMIT}, {args.keys} keys, "
          f"{args.seconds:g} s per row")
    print(HEADER, flush=True)
    try:
        results = asyncio.run(bench(args, redis))
    finally:
        redis.stop()
    print("\nfloodwall / limits:")
    for r in results:
        if r.library != "floodwall":
            continue
        other = next(o for o in results if o.library == "limits" and o.mode == r.mode and
                     (o.algorithm == "sliding-window-counter") == (r.algorithm == "sliding_window"))
        print(f"  {r.algorithm:<15} {r.mode:<12} throughput x{r.rate / other.rate:.1f}, "
              f"p99 {r.p99_us:.0f} vs {other.p99_us:.0f} µs")


if __name__ == "__main__":
    sys.exit(main())
