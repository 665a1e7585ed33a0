"""The measurements: each takes the ports of one column (direct or a tunnel) and returns a dict.

upload, download and duplex move verified bytes to and from the target servers; round
trips and connects sample latency on the echo target; parallel opens many echo
connections at once; idle memory reads the RSS of a flyway pair holding idle connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any

from .procfs import listen_overflows, rss_kib
from .target_servers import TargetServers
from .wire import (
    HEADER,
    MB,
    SEED_DOWN,
    SEED_DUPLEX_DOWN,
    SEED_DUPLEX_UP,
    SEED_UP,
    Endpoint,
    MiB,
    close,
    connect,
    next_tag,
    open_plain,
    pattern,
    pattern_hash,
)

__all__ = [
    "connects",
    "download",
    "duplex",
    "idle_memory",
    "parallel",
    "percentile",
    "round_trips",
    "stats",
    "upload",
]


async def upload(
    ports: Mapping[str, Endpoint], targets: TargetServers, nbytes: int
) -> dict[str, Any]:
    """Send N bytes to the sink, half-close, read its hash. Rate: until the sink saw EOF."""
    expected, tag = pattern_hash(nbytes, SEED_UP), next_tag()
    start = time.perf_counter()
    reader, writer = await connect(ports["sink"])
    try:
        writer.write(HEADER.pack(0, 0, tag))
        for chunk in pattern(nbytes, SEED_UP):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        replied = time.perf_counter()
    finally:
        await close(writer)
    seconds = targets.eof_at.pop(tag, replied) - start
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "mbps": nbytes / MB / seconds,
        "verified": reply.decode(errors="replace") == expected,
        "detail": ""
        if reply.decode(errors="replace") == expected
        else f"sink replied {reply[:80]!r}",
    }


async def _receive(reader: asyncio.StreamReader, nbytes: int) -> tuple[int, str, float]:
    digest, got = hashlib.sha256(), 0
    while got < nbytes:
        data = await reader.read(min(MiB, nbytes - got))
        if not data:
            break
        digest.update(data)
        got += len(data)
    return got, digest.hexdigest(), time.perf_counter()


async def download(
    ports: Mapping[str, Endpoint], targets: TargetServers, nbytes: int
) -> dict[str, Any]:
    """Ask the source for N bytes, hash them, then read its 64-hex trailer and EOF."""
    expected = pattern_hash(nbytes, SEED_DOWN)
    start = time.perf_counter()
    reader, writer = await connect(ports["source"])
    try:
        writer.write(HEADER.pack(nbytes, SEED_DOWN, next_tag()))
        await writer.drain()
        got, digest, done = await _receive(reader, nbytes)
        trailer = (await reader.read()).decode(errors="replace")
    finally:
        await close(writer)
    ok = got == nbytes and digest == expected == trailer
    return {
        "bytes": nbytes,
        "seconds": done - start,
        "mbps": got / MB / (done - start),
        "verified": ok,
        "detail": ""
        if ok
        else f"got {got}/{nbytes} bytes, hash ok={digest == expected}, trailer {trailer[:70]!r}",
    }


async def duplex(
    ports: Mapping[str, Endpoint], targets: TargetServers, nbytes: int
) -> dict[str, Any]:
    """N bytes each way at once on one connection; both directions hash-verified."""
    up_expected, down_expected = (
        pattern_hash(nbytes, SEED_DUPLEX_UP),
        pattern_hash(nbytes, SEED_DUPLEX_DOWN),
    )
    tag = next_tag()
    start = time.perf_counter()
    reader, writer = await connect(ports["duplex"])

    async def send() -> None:
        for chunk in pattern(nbytes, SEED_DUPLEX_UP):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    try:
        writer.write(HEADER.pack(nbytes, SEED_DUPLEX_DOWN, tag))
        sender = asyncio.create_task(send())
        try:
            got, digest, down_done = await _receive(reader, nbytes)
            await sender
        finally:
            sender.cancel()
        trailer = (await reader.read()).decode(errors="replace")
        replied = time.perf_counter()
    finally:
        await close(writer)
    up_seconds = targets.eof_at.pop(tag, replied) - start
    down_seconds = down_done - start
    ok_up = trailer[:64] == up_expected
    ok_down = got == nbytes and digest == down_expected == trailer[64:]
    return {
        "bytes": nbytes,
        "up_seconds": up_seconds,
        "down_seconds": down_seconds,
        "up_mbps": nbytes / MB / up_seconds,
        "down_mbps": got / MB / down_seconds,
        "verified": ok_up and ok_down,
        "up_verified": ok_up,
        "down_verified": ok_down,
        "detail": ""
        if ok_up and ok_down
        else f"up ok={ok_up}, down ok={ok_down}, got {got}/{nbytes}",
    }


async def round_trips(ports: Mapping[str, Endpoint], count: int, warmup: int) -> dict[str, Any]:
    """64-byte ping-pong over one connection to the echo target."""
    reader, writer = await connect(ports["echo"])
    body = os.urandom(56)
    samples: list[float] = []
    try:
        for i in range(warmup + count):
            payload = i.to_bytes(8, "big") + body
            start = time.perf_counter_ns()
            writer.write(payload)
            echoed = await reader.readexactly(64)
            elapsed = time.perf_counter_ns() - start
            if echoed != payload:
                raise AssertionError(f"round trip {i}: echo differs")
            if i >= warmup:
                samples.append(elapsed / 1000)
    finally:
        await close(writer)
    return {**stats(samples), "raw_us": samples}


async def connects(ports: Mapping[str, Endpoint], count: int, warmup: int) -> dict[str, Any]:
    """New connection, 1 byte out, its echo back; timed from connect() to the echo."""
    samples: list[float] = []
    for i in range(warmup + count):
        start = time.perf_counter_ns()
        reader, writer = await open_plain(ports["echo"])
        try:
            writer.write(b"\x5a")
            echoed = await reader.readexactly(1)
            elapsed = time.perf_counter_ns() - start
        finally:
            await close(writer)
        if echoed != b"\x5a":
            raise AssertionError(f"connect {i}: echo differs")
        if i >= warmup:
            samples.append(elapsed / 1000)
    return {**stats(samples), "raw_us": samples}


def stats(samples: list[float]) -> dict[str, Any]:
    """Count, p50, p99, mean and max of latency samples in µs."""
    return {
        "samples": len(samples),
        "p50_us": percentile(samples, 50),
        "p99_us": percentile(samples, 99),
        "mean_us": sum(samples) / len(samples),
        "max_us": max(samples),
    }


async def parallel(ports: Mapping[str, Endpoint], count: int, size: int) -> dict[str, Any]:
    """``count`` connections at once, each echoing ``size`` random bytes (half-close, hashed)."""
    payloads = [os.urandom(size) for _ in range(count)]

    connect_ms: list[float] = []

    async def one(payload: bytes) -> bool:
        began = time.perf_counter()
        reader, writer = await connect(ports["echo"])
        connect_ms.append((time.perf_counter() - began) * 1000)
        try:

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            try:
                echoed = await reader.read()
                await sender
            finally:
                sender.cancel()
        finally:
            await close(writer)
        return hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

    overflows = listen_overflows()
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(p) for p in payloads), return_exceptions=True)
    seconds = time.perf_counter() - start
    overflows = listen_overflows() - overflows
    verified = sum(1 for o in outcomes if o is True)
    failures: dict[str, int] = {}
    for o in outcomes:
        if o is not True:
            key = "hash mismatch" if o is False else f"{type(o).__name__}: {o}"[:120]
            failures[key] = failures.get(key, 0) + 1
    return {
        "connections": count,
        "bytes_each": size,
        "verified_count": verified,
        "verified": verified == count,
        "seconds": seconds,
        "failures": failures,
        "connect_ms_max": max(connect_ms, default=0.0),
        "connects_over_900ms": sum(1 for ms in connect_ms if ms > 900),
        "listen_overflows": overflows,
    }


async def idle_memory(
    ports: Mapping[str, Endpoint],
    targets: TargetServers,
    server_pid: int,
    client_pid: int,
    count: int,
) -> dict[str, Any]:
    """Server (and client) RSS before and with ``count`` idle forwarded connections."""
    await targets.wait_idle(lambda n: n == 0, 10)
    # Warm-up: the first streams import and allocate whatever is lazy.
    warm = [await connect(ports["idle"]) for _ in range(20)]
    await targets.wait_idle(lambda n: n >= 20, 15)
    for _, writer in warm:
        await close(writer)
    await targets.wait_idle(lambda n: n == 0, 15)
    await asyncio.sleep(0.5)
    server_before, client_before = rss_kib(server_pid), rss_kib(client_pid)

    writers: list[asyncio.StreamWriter] = []

    async def open_one() -> None:
        _, writer = await open_plain(ports["idle"])
        writers.append(writer)

    # Batches of 50, each waited for at the target, so the count measures memory rather
    # than the accept queue (the parallel test is the one that looks at bursts).
    overflows = listen_overflows()
    start = time.perf_counter()
    open_errors: list[str] = []
    reached_error = ""
    for batch in range(0, count, 50):
        opened = await asyncio.gather(
            *(open_one() for _ in range(min(50, count - batch))), return_exceptions=True
        )
        open_errors += [f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)]
        try:
            await targets.wait_idle(lambda n: n >= len(writers), 30)
        except TimeoutError:
            reached_error = f"only {targets.idle_open}/{len(writers)} reached the target in 30 s"
            break
    open_seconds = time.perf_counter() - start
    reached = targets.idle_open
    overflows = listen_overflows() - overflows
    await asyncio.sleep(1.0)
    server_with, client_with = rss_kib(server_pid), rss_kib(client_pid)

    start = time.perf_counter()
    await asyncio.gather(*(close(w) for w in writers))
    release_error = ""
    try:
        await targets.wait_idle(lambda n: n == 0, 30)
    except TimeoutError:
        release_error = f"{targets.idle_open} target connections still open 30 s after closing"
    release_seconds = time.perf_counter() - start
    await asyncio.sleep(0.5)
    server_after, client_after = rss_kib(server_pid), rss_kib(client_pid)
    n = max(reached, 1)
    return {
        "connections": count,
        "opened": len(writers),
        "reached_target": reached,
        "open_seconds": open_seconds,
        "release_seconds": release_seconds,
        "listen_overflows": overflows,
        "server_rss_kib": {
            "before": server_before,
            "with": server_with,
            "after_close": server_after,
        },
        "client_rss_kib": {
            "before": client_before,
            "with": client_with,
            "after_close": client_after,
        },
        "server_kib_per_conn": (server_with - server_before) / n,
        "client_kib_per_conn": (client_with - client_before) / n,
        "verified": reached == count and not release_error,
        "detail": "; ".join(
            filter(None, [reached_error, release_error, *sorted(set(open_errors))[:3]])
        ),
    }


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
