"""wrk hammers ``-P http://`` for 10 s while a tunnel transfer runs: the transfer keeps going.

Real processes, as deployed: a ``flyway`` server (``-P`` to nginx serving
``site_root``) and a ``flyway -w`` client forwarding a port to an echo server in
this process; wrk (one thread, 32 connections) asks the server's port for a 1 KB
file. Every transfer is hashed both ways; the tunnel's throughput during the
load must be at least half of what it was alone (the mean of 2 s before and 2 s
after the load, so that other work on the machine counts on both sides).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time

import pytest
from fallback_site import PASSWORD
from flyway_procs import flyway

from flyway_core import Address
from flyway_core.testing import EchoServer, free_port, hashed_exchange, wait_port

TRANSFER = 16 << 20  # bytes up (and back) per hashed exchange
LOAD_SECONDS = 10


async def _throughput(local: Address, seconds: float) -> tuple[float, int]:
    """Hashed exchanges back to back for ``seconds``: MB/s (up and down) and how many."""
    start = time.perf_counter()
    moved = rounds = 0
    while time.perf_counter() - start < seconds:
        sent, echoed, *_ = await hashed_exchange(local, TRANSFER)
        assert sent == echoed, "a transfer arrived damaged"
        moved += 2 * TRANSFER
        rounds += 1
    return moved / (time.perf_counter() - start) / 1e6, rounds


async def test_wrk_on_the_site_leaves_the_tunnel_at_least_half_its_speed(
    nginx_site: int,
) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (scripts/test installs it)")
    server_port, local_port = free_port(), free_port()
    server_args = [f"127.0.0.1:{server_port}", "-p", PASSWORD, "-q"]
    server_args += ["-P", f"http://127.0.0.1:{nginx_site}"]
    async with EchoServer() as echo:
        client_args = ["-w", "-q", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{echo.port}"]
        client_args += [f"127.0.0.1:{server_port}", "-p", PASSWORD]
        with flyway(server_args) as server:
            await asyncio.to_thread(wait_port, server_port)
            with flyway(client_args) as client:
                await asyncio.to_thread(wait_port, local_port)
                local = Address("127.0.0.1", local_port)
                alone, _ = await _throughput(local, 2)
                load = await asyncio.create_subprocess_exec(
                    wrk, "-t1", "-c32", f"-d{LOAD_SECONDS}s",
                    f"http://127.0.0.1:{server_port}/1k.bin",
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )  # fmt: skip
                await asyncio.sleep(1)  # wrk is up to speed
                loaded, rounds = await _throughput(local, LOAD_SECONDS - 2.5)
                out, _ = await asyncio.wait_for(load.communicate(), LOAD_SECONDS + 10)
                after, _ = await _throughput(local, 2)  # alone again: the machine's own drift
                alone = (alone + after) / 2
                for process in (client, server):
                    assert process.poll() is None, process.communicate(timeout=5)
    report = out.decode()
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))  # type: ignore[union-attr]
    assert "Non-2xx" not in report and "Socket errors" not in report, report
    assert requests > 200, report
    print(f"tunnel alone {alone:.0f} MB/s, under wrk {loaded:.0f} MB/s ({rounds} transfers); "
          f"wrk {requests:.0f} requests/s")  # fmt: skip
    assert loaded >= alone / 2, f"alone {alone:.0f} MB/s, under load {loaded:.0f} MB/s"
