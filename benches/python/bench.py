"""floodwall vs `limits` from Python, side by side against one private redis-server.

Decisions per second and per-call p50/p99 latency, async (asyncio, several tasks in flight, and
one at a time) and sync (one thread), for the pairs that do the same job:
  floodwall sliding_window  vs  limits SlidingWindowCounterRateLimiter  (approximate windows)
  floodwall sliding_log     vs  limits MovingWindowRateLimiter          (exact windows)
`limits` uses its async Redis storage (async+redis://, coredis) and its sync RedisStorage.
floodwall runs each row twice: exact (every decision a Redis call) and "+cache" (the core's local
cache layer with its defaults: denial cache, coalescing, leases within a drift budget of 1% of the
limit), which trades up to that budget of accuracy for throughput. `local %` is the share of
floodwall decisions answered without a Redis call.

Fairness: every call decides one request for one of --keys identities at "100/second" each (so
nearly all are admitted and the moving window's lists stay short); `limits`' hit() returns only a
bool, while floodwall's check returns the whole decision (remaining, reset, retry) in the same
round trip. floodwall runs with fallback="error" and a breaker that never opens, and the script
checks afterwards that every floodwall decision came from Redis, so no local fallback inflates it.

    MATURIN_PEP517_ARGS="--features test-hooks" .venv/bin/pip install . "limits[async-redis]>=5"
    .venv/bin/python benches/python/bench.py    # --seconds 5 --concurrency 64 --keys 10000 --limit 100/second
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import limits
from limits import parse, strategies
from limits.aio import strategies as aio_strategies
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.storage import RedisStorage

import floodwall

LIMIT = "100/second"  # default of --limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="floodwall-bench-")
        self.port = free_port()
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
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from e
                time.sleep(0.05)

    def command(self, *args: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
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
    cpu_us: float  # CPU per decision in this process (all threads), microseconds
    redis_cpu_us: float  # CPU per decision in redis-server
    local: float | None = None  # share of floodwall decisions answered without Redis (cache rows)

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds


def percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    n = len(samples)
    return samples[n // 2] / 1000, samples[min(n - 1, (n * 99) // 100)] / 1000


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def __enter__(self) -> Meter:
        self.cpu0, self.rcpu0 = time.process_time(), proc_cpu(self.redis.proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.rcpu = proc_cpu(self.redis.proc.pid) - self.rcpu0


async def run_async(
    call: Callable[[str], Awaitable[Any]], keys: int, concurrency: int, seconds: float
) -> tuple[int, float, list[int]]:
    lat: list[int] = []
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        pc = time.perf_counter_ns
        while time.perf_counter() < stop:
            key = f"user:{i % keys}"
            t0 = pc()
            await call(key)
            lat.append(pc() - t0)
            i += concurrency

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


def floodwall_limiter(url: str, algorithm: str, cache: bool = False) -> floodwall.Limiter:
    return floodwall.Limiter(
        LIMIT,
        algorithm=algorithm,
        redis_url=url,
        prefix=f"bench-{algorithm}-{time.monotonic_ns()}",
        fallback="error",
        timeout_ms=5000,
        breaker={"slow_call_ms": 60_000, "failure_threshold": 1_000_000},
        cache=cache or None,
    )


def decisions(fw: floodwall.Limiter) -> tuple[int, int]:
    """(all decisions, those answered locally by the cache layer) so far."""
    d = fw.metrics()["decisions"]
    return sum(d.values()), sum(v for k, v in d.items() if k.startswith(("cache_", "lease_")))


PAIRS = [
    (
        "sliding_window",
        aio_strategies.SlidingWindowCounterRateLimiter,
        strategies.SlidingWindowCounterRateLimiter,
        "sliding-window-counter",
    ),
    ("sliding_log", aio_strategies.MovingWindowRateLimiter, strategies.MovingWindowRateLimiter, "moving-window"),
]


def one_at_a_time_floor(redis: Redis, seconds: float) -> Result:
    """The fastest one-call-at-a-time rate any client reaches on this machine and server:
    redis-benchmark (C, one connection) running EVALSHA of a script that only returns. No library
    waiting for each reply before the next call (the async c=1 and sync rows) can go faster."""
    sha = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "SCRIPT", "LOAD", "return 1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    n = max(1000, int(20_000 * seconds))
    t0 = time.perf_counter()
    out = subprocess.run(
        ["redis-benchmark", "-p", str(redis.port), "-c", "1", "-n", str(n), "--csv", "EVALSHA", sha, "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secs = time.perf_counter() - t0
    row = next(line for line in out.splitlines() if line.startswith('"EVALSHA'))
    cols = [c.strip('"') for c in row.split(",")]
    rate, p50_ms, p99_ms = float(cols[1]), float(cols[4]), float(cols[6])
    return Result(
        "redis", "EVALSHA 'return 1' (floor)", "c=1", int(rate * secs), secs, p50_ms * 1000, p99_ms * 1000, 0.0, 0.0
    )


async def one_round(args: argparse.Namespace, redis: Redis, limiters: list[floodwall.Limiter]) -> list[Result]:
    url = f"redis://127.0.0.1:{redis.port}"
    item = parse(LIMIT)
    results: list[Result] = []
    if shutil.which("redis-benchmark"):
        results.append(one_at_a_time_floor(redis, args.seconds))
        print(fmt(results[-1]), flush=True)
    warm = min(0.5, args.seconds)

    def record(
        name: str,
        alg: str,
        mode: str,
        n: int,
        secs: float,
        lat: list[int],
        m: Meter,
        fw: floodwall.Limiter | None,
        before: tuple[int, int],
    ) -> None:
        local = None
        if fw is not None and fw.cache_stats() is not None:
            total, answered = decisions(fw)
            local = (answered - before[1]) / max(1, total - before[0])
        results.append(Result(name, alg, mode, n, secs, *percentiles(lat), m.cpu / n * 1e6, m.rcpu / n * 1e6, local))
        print(fmt(results[-1]), flush=True)

    def made(alg: str, cache: bool = False) -> floodwall.Limiter:
        fw = floodwall_limiter(url, alg, cache)
        limiters.append(fw)
        return fw

    for fw_alg, aio_cls, sync_cls, limits_name in PAIRS:
        for mode, conc in ((f"async c={args.concurrency}", args.concurrency), ("async c=1", 1)):
            fw, cached = made(fw_alg), made(fw_alg, cache=True)
            await fw.connect()
            await cached.connect()
            lim = aio_cls(AsyncRedisStorage(url.replace("redis://", "async+redis://")))
            await lim.hit(item, "warmup")
            runs: list[tuple[str, str, Callable[[str], Awaitable[Any]], bool, floodwall.Limiter | None]] = [
                ("floodwall", fw_alg, fw.check, True, fw),
                ("floodwall", fw_alg + " +cache", cached.check, True, cached),
                ("limits", limits_name, lambda k, lim=lim: lim.hit(item, k), True, None),
            ]
            if fw_alg == "sliding_window" and conc > 1:
                # The same calls with results delivered one by one by pyo3-async-runtimes.
                runs.append(("floodwall", fw_alg + " (pyo3-async-rt)", fw.check, False, fw))
            for name, alg, call, bridge, owner in runs:
                floodwall._floodwall._use_loop_bridge(bridge)
                await run_async(call, args.keys, conc, warm)
                before = decisions(owner) if owner else (0, 0)
                with Meter(redis) as m:
                    n, secs, lat = await run_async(call, args.keys, conc, args.seconds)
                record(name, alg, mode, n, secs, lat, m, owner, before)
            floodwall._floodwall._use_loop_bridge(True)
            redis.command("FLUSHALL")
        fw, cached = made(fw_alg), made(fw_alg, cache=True)
        fw.connect_sync()
        cached.connect_sync()
        sync_lim = sync_cls(RedisStorage(url))
        sync_runs: list[tuple[str, str, Callable[[str], Any], bool, floodwall.Limiter | None]] = [
            ("floodwall", fw_alg, fw.check_sync, True, fw),
            ("floodwall", fw_alg + " +cache", cached.check_sync, True, cached),
            ("limits", limits_name, lambda k, lim=sync_lim: lim.hit(item, k), True, None),
        ]
        if fw_alg == "sliding_window":
            # The same calls, each handed to the shared runtime and waited for.
            sync_runs.append(("floodwall", fw_alg + " (sync via runtime)", fw.check_sync, False, fw))
        for name, alg, scall, here, owner in sync_runs:
            floodwall._floodwall._sync_on_caller_thread(here)
            run_sync(scall, args.keys, warm)
            before = decisions(owner) if owner else (0, 0)
            with Meter(redis) as m:
                n, secs, lat = run_sync(scall, args.keys, args.seconds)
            record(name, alg, "sync", n, secs, lat, m, owner, before)
        floodwall._floodwall._sync_on_caller_thread(True)
        redis.command("FLUSHALL")
    return results


async def bench(args: argparse.Namespace, redis: Redis) -> list[Result]:
    limiters: list[floodwall.Limiter] = []
    rounds: list[list[Result]] = []
    for r in range(args.rounds):
        print(f"-- round {r + 1} of {args.rounds}, load averages {load()}", flush=True)
        rounds.append(await one_round(args, redis, limiters))
    # Every exact floodwall decision must have come from Redis, every cached one from Redis or
    # the cache layer: none from the fallback.
    for fw in limiters:
        allowed = ("redis_", "cache_", "lease_") if fw.cache_stats() is not None else ("redis_",)
        other = {k: v for k, v in fw.metrics()["decisions"].items() if v and not k.startswith(allowed)}
        assert not other, f"floodwall decisions not from Redis: {other}"
    # The median round of each row, by decisions/s.
    medians = []
    for i in range(len(rounds[0])):
        row = sorted((rnd[i] for rnd in rounds), key=lambda x: x.rate)
        medians.append(row[len(row) // 2])
    return medians


HEADER = (
    f"{'library':<10} {'algorithm':<34} {'mode':<12} {'decisions/s':>12} {'p50 µs':>8} {'p99 µs':>8}"
    f" {'cpu µs/dec':>11} {'redis µs/dec':>13} {'local %':>8}"
)


def fmt(r: Result) -> str:
    local = "" if r.local is None else f"{100 * r.local:.1f}"
    return (
        f"{r.library:<10} {r.algorithm:<34} {r.mode:<12} {r.rate:>12,.0f} {r.p50_us:>8.0f} {r.p99_us:>8.0f}"
        f" {r.cpu_us:>11.1f} {r.redis_cpu_us:>13.1f} {local:>8}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    global LIMIT
    if not hasattr(floodwall._floodwall, "_use_loop_bridge"):
        # the rows that compare delivery paths switch them through the test build's hooks
        sys.exit('bench.py needs the test build: MATURIN_PEP517_ARGS="--features test-hooks" .venv/bin/pip install .')
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    p.add_argument("--concurrency", type=int, default=64, help="asyncio tasks in flight")
    p.add_argument("--keys", type=int, default=10_000, help="distinct identities, used round-robin")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each row reports its median round")
    p.add_argument("--limit", default=LIMIT, help="the one limit of every identity")
    args = p.parse_args()
    LIMIT = args.limit
    redis = Redis()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    print(
        f"floodwall {floodwall.__version__}, limits {limits.__version__}, Python {platform.python_version()}, "
        f"redis-server {version}, {os.cpu_count()} cores, limit {LIMIT}, {args.keys} keys, "
        f"{args.seconds:g} s per row, {args.rounds} rounds, load averages {load()}"
    )
    print(HEADER, flush=True)
    try:
        results = asyncio.run(bench(args, redis))
    finally:
        redis.stop()
    print(f"\nmedian of {args.rounds} rounds (load averages now {load()}):")
    print(HEADER)
    for r in results:
        print(fmt(r))
    floor = next((r for r in results if r.library == "redis"), None)
    print("\nfloodwall / limits (median rounds):")
    for r in results:
        if r.library != "floodwall":
            continue
        other = next(
            o
            for o in results
            if o.library == "limits"
            and o.mode == r.mode
            and (o.algorithm == "sliding-window-counter") == r.algorithm.startswith("sliding_window")
        )
        met = r.rate >= 5 * other.rate and r.p99_us <= other.p99_us
        # one call at a time, 5x limits may lie beyond what any client reaches on this machine
        beyond = ""
        if floor is not None and r.mode in ("async c=1", "sync") and 5 * other.rate > floor.rate:
            beyond = f"  (5x limits = {5 * other.rate:,.0f}/s, above the one-at-a-time floor {floor.rate:,.0f}/s)"
        print(
            f"  {r.algorithm:<34} {r.mode:<12} decisions/s x{r.rate / other.rate:.1f}, "
            f"p99 {r.p99_us:.0f} vs {other.p99_us:.0f} µs{'  goal met' if met else ''}{beyond}"
        )


if __name__ == "__main__":
    sys.exit(main())
