"""The cluster option from Python: a real six-process Redis Cluster (3 masters, 3 replicas)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from floodwall import Limiter

from conftest import redis_command


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55_000:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10_000))
                    return port
                except OSError:
                    continue


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    root = Path(tempfile.mkdtemp(prefix="floodwall-py-cluster-"))
    procs, ports = [], []
    try:
        for i in range(6):
            port = cluster_port()
            d = root / str(i)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(d),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    if redis_command(port, "PING") == b"+PONG":
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "cluster nodes did not start"
                time.sleep(0.02)  # readiness poll, bounded by the deadline
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 20
        while not all(
            b"cluster_state:ok"
            in subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True).stdout
            for p in ports
        ):
            assert time.monotonic() < deadline, "cluster did not reach cluster_state:ok"
            time.sleep(0.05)  # convergence poll, bounded by the deadline
        yield [f"redis://127.0.0.1:{p}" for p in ports]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)


async def test_limits_hold_on_a_cluster(cluster: list[str], prefix: str) -> None:
    limiter = Limiter(
        ["2/minute", "5/second"], cluster_nodes=cluster, prefix=prefix, fallback="error", timeout_ms=5_000
    )
    decisions = [await limiter.check("user:1") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert all(d.source == "redis" for d in decisions)
    assert decisions[2].limited_by == "2/minute"
    # identities land on all three masters; each is counted on its own
    for i in range(30):
        assert limiter.check_sync(f"spread:{i}").allowed


def test_bad_cluster_seed_is_a_config_error_naming_it() -> None:
    from floodwall import ConfigError

    with pytest.raises(ConfigError, match="http://nope"):
        Limiter("2/minute", cluster_nodes=["http://nope:7000"])
