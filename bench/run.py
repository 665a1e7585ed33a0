#!/usr/bin/env python3
"""Benchmark flyway: the same measurements through the tunnel and directly to the same targets.

    .venv/bin/python bench/run.py [--transport ws] [--quick] [--json PATH]

The far ends (echo, sink, source, duplex, idle holder) are asyncio servers inside this
driver on 127.0.0.1:0. One flyway server and one flyway client (with one ``-L`` per
target) run as separate subprocesses per transport, as users run them; http-squid and
http-nginx put a real squid or nginx (tests/intermediaries.py) between them. A "bare
relay" column (bench/bare_relay.py: two plain relay processes chained) shows the latency
floor of any two-process relay, and a "bare ws relay" column (bench/ws_relay.py) the floor
of two aiohttp WebSocket relay processes, under flyway's ws transport. Every metric is
measured against the targets directly and then through each tunnel, in turn, so the ratios
hold on a noisy machine. See bench/README.md for the wire formats, the metrics and the
targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KiB = 1 << 10
MiB = 1 << 20
MB = 1_000_000
# goflyway-style flags that pick a transport on the client; the server serves them all.
TRANSPORT_FLAGS: dict[str, list[str]] = {
    "ws": ["-w"],
    "http": [],
    "http-squid": [],
    "http-nginx": [],
    "kcp": ["-K"],
}
# Columns with a real HTTP intermediary (tests/intermediaries.py) between client and
# server: squid as the client's --proxy (it refuses CONNECT), or nginx as a buffering
# reverse proxy (a CDN edge) that the client dials instead of the server.
VIA: dict[str, str] = {"http-squid": "squid", "http-nginx": "nginx"}
DEFAULT_TRANSPORTS = ["ws", "http", "http-squid", "http-nginx"]
BARE = "bare relay"
BARE_WS = "bare ws relay"  # bench/ws_relay.py: aiohttp WebSocket, nothing of flyway's
# bench/bare_relay.py variants: MODE -> its flags (protocols + uvloop is the floor)
BARE_MODES: dict[str, list[str]] = {
    "protocols": [],
    "streams": ["--streams"],
    "protocols/asyncio": ["--asyncio"],
    "streams/asyncio": ["--streams", "--asyncio"],
}
# Removed from flyway's environment: with them the `http` column would not be direct.
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)
TARGETS = ("echo", "sink", "source", "duplex", "idle")
# Every request to sink/source/duplex starts with (length, seed, tag), big-endian u64s.
HEADER = struct.Struct(">QQQ")
SEED_UP, SEED_DOWN, SEED_DUPLEX_UP, SEED_DUPLEX_DOWN = 1, 2, 3, 4
BLOCK = os.urandom(MiB)

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
progress = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


# --------------------------------------------------------------------------- data


def pattern(nbytes: int, seed: int) -> Iterator[bytes]:
    """``nbytes`` of random-looking data: 1 MiB chunks of one random block, each stamped.

    Each chunk starts with (seed, index), so a lost, repeated or reordered chunk changes
    the hash; the rest of the chunk is the same random block (cheap to produce).
    """
    tail = BLOCK[16:]
    index = 0
    while nbytes > 0:
        chunk = struct.pack(">QQ", seed, index) + tail
        if nbytes < len(chunk):
            chunk = chunk[:nbytes]
        yield chunk
        nbytes -= len(chunk)
        index += 1


_hashes: dict[tuple[int, int], str] = {}


def pattern_hash(nbytes: int, seed: int) -> str:
    """sha256 hex of ``pattern(nbytes, seed)``, cached (computed before any timing starts)."""
    key = (nbytes, seed)
    if key not in _hashes:
        digest = hashlib.sha256()
        for chunk in pattern(nbytes, seed):
            digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


_tags = iter(range(1, 1 << 62))


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --------------------------------------------------------------------------- targets


class Targets:
    """The far ends of every connection: asyncio servers on 127.0.0.1:0 in this process.

    echo    echoes everything; on EOF it half-closes back and closes.
    sink    header, then data until EOF; replies the 64-hex sha256 of the data and closes.
    source  header (length N, seed); sends pattern(N, seed), then its 64-hex sha256, closes.
    duplex  header (length N, seed); sends pattern(N, seed) while hashing what it receives
            until EOF; then replies sha256(received) + sha256(sent) (128 hex) and closes.
    idle    accepts and holds the connection until the peer closes it.
    """

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.idle_open = 0
        self.eof_at: dict[int, float] = {}  # tag -> when the upload's EOF reached the target
        self.errors: list[str] = []
        self._servers: list[asyncio.Server] = []
        self._idle_changed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        handlers = {
            "echo": self._echo,
            "sink": self._sink,
            "source": self._source,
            "duplex": self._duplex,
            "idle": self._idle,
        }
        for name, handler in handlers.items():
            server = await asyncio.start_server(
                self._guard(name, handler), HOST, 0, limit=4 * MiB, backlog=4096
            )
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            server.close()

    async def wait_idle(self, want: Callable[[int], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not want(self.idle_open):
                self._idle_changed.clear()
                await self._idle_changed.wait()

    def _guard(
        self,
        name: str,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            writer.transport.set_write_buffer_limits(high=4 * MiB)
            try:
                async with asyncio.timeout(300):
                    await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # readiness probes and aborted transfers; the client side reports those
            except Exception as exc:
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                self._writers.discard(writer)
                writer.close()

        return run

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(256 * KiB):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, tag = HEADER.unpack(await reader.readexactly(HEADER.size))
        digest = hashlib.sha256()
        while data := await reader.read(MiB):
            digest.update(data)
        self.eof_at[tag] = time.perf_counter()
        writer.write(digest.hexdigest().encode())
        await writer.drain()

    async def _source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nbytes, seed, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
        for chunk in pattern(nbytes, seed):
            writer.write(chunk)
            await writer.drain()
        writer.write(pattern_hash(nbytes, seed).encode())
        await writer.drain()

    async def _duplex(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nbytes, seed, tag = HEADER.unpack(await reader.readexactly(HEADER.size))

        async def send() -> None:
            for chunk in pattern(nbytes, seed):
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            digest = hashlib.sha256()
            while data := await reader.read(MiB):
                digest.update(data)
            self.eof_at[tag] = time.perf_counter()
            await sender
        finally:
            sender.cancel()
        writer.write(digest.hexdigest().encode() + pattern_hash(nbytes, seed).encode())
        await writer.drain()

    async def _idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle_open += 1
        self._idle_changed.set()
        try:
            while await reader.read(4096):
                pass
        finally:
            self.idle_open -= 1
            self._idle_changed.set()


# --------------------------------------------------------------------------- measurements


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=4 * MiB)
    writer.transport.set_write_buffer_limits(high=4 * MiB)
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        async with asyncio.timeout(5):
            await writer.wait_closed()


async def upload(ports: dict[str, int], targets: Targets, nbytes: int) -> dict[str, Any]:
    """Send N bytes to the sink, half-close, read its hash. Rate: until the sink saw EOF."""
    expected, tag = pattern_hash(nbytes, SEED_UP), next(_tags)
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


async def receive(reader: asyncio.StreamReader, nbytes: int) -> tuple[int, str, float]:
    digest, got = hashlib.sha256(), 0
    while got < nbytes:
        data = await reader.read(min(MiB, nbytes - got))
        if not data:
            break
        digest.update(data)
        got += len(data)
    return got, digest.hexdigest(), time.perf_counter()


async def download(ports: dict[str, int], targets: Targets, nbytes: int) -> dict[str, Any]:
    """Ask the source for N bytes, hash them, then read its 64-hex trailer and EOF."""
    expected = pattern_hash(nbytes, SEED_DOWN)
    start = time.perf_counter()
    reader, writer = await connect(ports["source"])
    try:
        writer.write(HEADER.pack(nbytes, SEED_DOWN, next(_tags)))
        await writer.drain()
        got, digest, done = await receive(reader, nbytes)
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


async def duplex(ports: dict[str, int], targets: Targets, nbytes: int) -> dict[str, Any]:
    """N bytes each way at once on one connection; both directions hash-verified."""
    up_expected, down_expected = (
        pattern_hash(nbytes, SEED_DUPLEX_UP),
        pattern_hash(nbytes, SEED_DUPLEX_DOWN),
    )
    tag = next(_tags)
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
            got, digest, down_done = await receive(reader, nbytes)
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


async def round_trips(ports: dict[str, int], count: int, warmup: int) -> dict[str, Any]:
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


async def connects(ports: dict[str, int], count: int, warmup: int) -> dict[str, Any]:
    """New connection, 1 byte out, its echo back; timed from connect() to the echo."""
    samples: list[float] = []
    for i in range(warmup + count):
        start = time.perf_counter_ns()
        reader, writer = await asyncio.open_connection(HOST, ports["echo"])
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
    return {
        "samples": len(samples),
        "p50_us": percentile(samples, 50),
        "p99_us": percentile(samples, 99),
        "mean_us": sum(samples) / len(samples),
        "max_us": max(samples),
    }


async def parallel(ports: dict[str, int], count: int, size: int) -> dict[str, Any]:
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


def listen_overflows() -> int:
    """The kernel's count of SYNs dropped because an accept queue was full (host-wide)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = [x.split() for x in Path("/proc/net/netstat").read_text().splitlines()]
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names[0] == "TcpExt:":
                return int(values[names.index("ListenOverflows")])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_memory(
    ports: dict[str, int], targets: Targets, server_pid: int, client_pid: int, count: int
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
        _, writer = await asyncio.open_connection(HOST, ports["idle"])
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


# --------------------------------------------------------------------------- flyway processes


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the driver dies, so no flyway outlives a crashed bench."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state (from /proc, so probing opens no connection)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def first_line(path: Path) -> str:
    for line in read_lines(path):
        text = line.strip(" │╭╮╰╯─")
        if text:
            return text
    return "(no output)"


def read_lines(path: Path) -> list[str]:
    try:
        return [
            line.rstrip() for line in path.read_text(errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return []


class Intermediaries:
    """squid and nginx from tests/intermediaries.py: started on demand, stopped by close().

    One squid serves every http-squid column; each http-nginx column gets its own nginx
    (its upstream is that column's flyway server). Their logs are copied into the log
    directory before they stop (their own directories are removed).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.stack = contextlib.ExitStack()
        self.children: list[tuple[str, Any]] = []  # (log name, intermediaries.Child)
        self.children_closed: list[str] = []
        self._module: Any = None
        self._squid: Any = None

    def module(self) -> Any:
        if self._module is None:
            tests = str(ROOT / "tests")
            if tests not in sys.path:
                sys.path.insert(0, tests)
            import intermediaries  # type: ignore[import-not-found]  # tests/intermediaries.py

            self._module = intermediaries
        return self._module

    def missing(self, name: str) -> str:
        """Why ``name`` (squid or nginx) cannot run here; '' when it can."""
        try:
            module = self.module()
        except Exception as exc:
            return f"cannot import tests/intermediaries.py: {type(exc).__name__}: {exc}"
        try:
            module.find_binary(name)
        except module.MissingBinary as exc:
            return str(exc)
        return ""

    def squid(self) -> Any:
        """The shared squid (started on first use; from the main thread, see its README)."""
        if self._squid is None:
            self._squid = self.stack.enter_context(self.module().run_squid())
            self.children.append(("squid", self._squid))
        return self._squid

    def nginx(self, label: str, upstream_port: int) -> Any:
        child = self.stack.enter_context(self.module().run_nginx(upstream_port))
        self.children.append((f"{label.replace('/', '-')}-nginx", child))
        return child

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def save_logs(self) -> None:
        for name, child in self.children:
            with contextlib.suppress(OSError):
                self.log_path(name).write_text(child.log_tail(100_000) + "\n")

    def close(self) -> None:
        if self.children:
            self.save_logs()
        self.children_closed += [name for name, _ in self.children]
        self.children = []
        self._squid = None
        self.stack.close()

    def notable(self) -> dict[str, list[str]]:
        """Log lines worth a look: nginx [warn] and worse, squid ERROR/WARNING/FATAL."""
        found: dict[str, list[str]] = {}
        for name in self.children_closed:
            lines = [
                line
                for line in read_lines(self.log_path(name))
                if any(
                    mark in line
                    for mark in ("[warn]", "[error]", "[crit]", "[alert]", "[emerg]", "ERROR")
                )
                or ("WARNING" in line and "squid" in name)
                or "FATAL" in line
            ]
            if lines:
                found[name] = lines
        return found


@dataclass
class Tunnel:
    """One flyway server plus one client forwarding a local port to each target."""

    header: ClassVar[str] = "tunnel ({})"
    metrics: ClassVar[tuple[str, ...] | None] = None  # None: every metric

    label: str
    transport: str
    python: str
    log_dir: Path
    window: int | None
    env_extra: dict[str, str] = field(default_factory=dict)
    via: str = ""  # "squid" or "nginx": an intermediary in the path (VIA)
    hops: Intermediaries | None = None
    via_child: Any = None  # the intermediaries.Child this column goes through
    server: subprocess.Popen[bytes] | None = None
    client: subprocess.Popen[bytes] | None = None
    forwards: dict[str, int] = field(default_factory=dict)
    skipped: str = ""
    exit_codes: dict[str, Any] = field(default_factory=dict)

    def does(self, metric: str) -> bool:
        return self.metrics is None or metric in self.metrics

    @property
    def log_stem(self) -> str:
        return self.label.replace("/", "-").replace(" ", "-")

    @property
    def server_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-server.log"

    @property
    def client_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-client.log"

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        return self._popen([self.python, "-m", "flyway_core", *args], log)

    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **self.env_extra}
        for name in PROXY_VARIABLES:  # only the http-squid column goes through a proxy
            env.pop(name, None)
        with log.open("wb") as sink:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=env,
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )

    async def start(self, target_ports: dict[str, int]) -> bool:
        password = secrets.token_urlsafe(12)
        server_port, *local = free_ports(1 + len(TARGETS))
        window = ["-W", str(self.window)] if self.window else []
        self.server = self._spawn(
            [f"{HOST}:{server_port}", "-p", password, "-q", *window], self.server_log
        )
        if not await self._listening(self.server, [server_port], 20):
            self.skipped = f"server did not start: {first_line(self.server_log)}"
            return False
        self.forwards = dict(zip(TARGETS, local, strict=True))
        rules = [
            a
            for name, lport in self.forwards.items()
            for a in ("-L", f"{lport}:{HOST}:{target_ports[name]}")
        ]
        flags = TRANSPORT_FLAGS[self.transport]
        server_url = f"{HOST}:{server_port}"
        if self.via:
            assert self.hops is not None
            try:  # blocks the loop for a moment: fine, nothing is being measured yet
                if self.via == "squid":
                    self.via_child = self.hops.squid()
                    flags = [*flags, "--proxy", self.via_child.url]
                else:
                    self.via_child = self.hops.nginx(self.label, server_port)
                    server_url = self.via_child.url
            except Exception as exc:
                lines = [x for x in str(exc).splitlines() if x.strip()] or [type(exc).__name__]
                self.skipped = f"{self.via} did not start: {lines[0]}"
                return False
        self.client = self._spawn(
            [*flags, "-q", *window, *rules, server_url, "-p", password],
            self.client_log,
        )
        return await self._started(local)

    async def _started(self, local: list[int]) -> bool:
        assert self.client is not None
        assert self.server is not None
        if not await self._listening(self.client, local, 20):
            self.skipped = f"client did not start: {first_line(self.client_log)}"
            return False
        # The first stream may be what dials the server: check one echo end to end.
        try:
            async with asyncio.timeout(20):
                reader, writer = await connect(self.forwards["echo"])
                writer.write(b"hello")
                echoed = await reader.readexactly(5)
                await close(writer)
            if echoed != b"hello":
                raise AssertionError("echo differs")
        except (Exception, TimeoutError) as exc:
            died = self.client.poll() is not None or self.server.poll() is not None
            why = first_line(self.client_log) if died else f"{type(exc).__name__}: {exc}"
            self.skipped = f"first echo through the tunnel failed: {why}"
            return False
        return True

    @staticmethod
    async def _listening(proc: subprocess.Popen[bytes], ports: list[int], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if set(ports) <= listening_ports():
                return True
            await asyncio.sleep(0.1)
        return False

    def alive(self) -> str:
        """'' while both processes (and the intermediary) run, else what died."""
        dead = [
            f"{name} exited with {p.returncode}"
            for name, p in (("server", self.server), ("client", self.client))
            if p is not None and p.poll() is not None
        ]
        if self.via_child is not None and not self.via_child.alive():
            dead.append(f"{self.via} exited with {self.via_child.process.returncode}")
        return "; ".join(dead)

    def cpu(self) -> dict[str, float]:
        return {
            name: cpu_seconds(p.pid)
            for name, p in (("server", self.server), ("client", self.client))
            if p is not None
        }

    async def stop(self) -> None:
        for name, proc in (("client", self.client), ("server", self.server)):
            if proc is None:
                continue
            if proc.poll() is not None:
                self.exit_codes[name] = proc.returncode
                continue
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                self.exit_codes[name] = "killed (no exit 5 s after SIGTERM)"
            else:
                self.exit_codes[name] = proc.returncode

    def kill_now(self) -> None:
        for proc in (self.client, self.server):
            if proc is not None and proc.poll() is None:
                proc.kill()


@dataclass
class BareRelay(Tunnel):
    """The reference: two bench/bare_relay.py processes chained, client -> server -> target.

    No crypto, no framing, no multiplexing; the same two extra processes and loopback
    hops as a tunnel. Only the latency metrics run on it.
    """

    header: ClassVar[str] = "{} (reference)"
    metrics: ClassVar[tuple[str, ...] | None] = ("rtt", "connect")
    flags: list[str] = field(default_factory=list)  # BARE_MODES

    def scripts(self) -> tuple[list[str], list[str]]:
        """The server's and the client's command line, before their forwarding rules."""
        script = [str(ROOT / "bench" / "bare_relay.py"), *self.flags]
        return script, script

    async def start(self, target_ports: dict[str, int]) -> bool:
        server_script, client_script = self.scripts()
        ports = free_ports(2 * len(TARGETS))
        middle, local = ports[: len(TARGETS)], ports[len(TARGETS) :]
        self.server = self._popen(
            [
                self.python,
                *server_script,
                *(f"{m}:{HOST}:{target_ports[n]}" for n, m in zip(TARGETS, middle, strict=True)),
            ],
            self.server_log,
        )
        if not await self._listening(self.server, middle, 20):
            self.skipped = f"server relay did not start: {first_line(self.server_log)}"
            return False
        self.forwards = dict(zip(TARGETS, local, strict=True))
        self.client = self._popen(
            [
                self.python,
                *client_script,
                *(f"{lp}:{HOST}:{m}" for lp, m in zip(local, middle, strict=True)),
            ],
            self.client_log,
        )
        return await self._started(local)


@dataclass
class BareWebSocketRelay(BareRelay):
    """The reference under ``ws``: bench/ws_relay.py, one aiohttp WebSocket per connection.

    Frames are written and received as flyway's ``ws`` carrier does, with no crypto,
    multiplexing or flow control, so flyway's cost over this column is its own.
    """

    def scripts(self) -> tuple[list[str], list[str]]:
        script = str(ROOT / "bench" / "ws_relay.py")
        return [script, "server"], [script, "client"]


# --------------------------------------------------------------------------- driver


@dataclass
class Plan:
    max_mb: int
    min_mb: int
    seconds: float
    rtt: int
    rtt_warmup: int
    connects: int
    connect_warmup: int
    parallel: int
    parallel_bytes: int
    idle: int
    repeats: int  # throughput runs per endpoint; the median one is reported
    rounds: int  # latency samples come in this many rounds, interleaved across columns


FULL = Plan(200, 16, 2.5, 2000, 200, 300, 30, 200, 64 * KiB, 1000, 3, 4)
QUICK = Plan(32, 4, 0.8, 500, 100, 100, 10, 200, 64 * KiB, 1000, 1, 2)


async def guarded(
    label: str,
    name: str,
    tunnel: Tunnel | None,
    coro: Awaitable[dict[str, Any]],
    say: bool = True,
) -> dict[str, Any]:
    """Run one measurement; errors and timeouts become a result, never a crash."""
    if tunnel is not None and (dead := tunnel.alive()):
        with contextlib.suppress(Exception):
            coro.close()  # type: ignore[attr-defined]
        return {"error": f"not run: {dead}"}
    cpu_before = tunnel.cpu() if tunnel else {}
    wall = time.perf_counter()
    try:
        result = await coro
    except TimeoutError:
        result = {"error": "timed out"}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if tunnel is not None:
        wall = time.perf_counter() - wall
        result["cpu_seconds"] = {
            k: round(v - cpu_before.get(k, 0.0), 3) for k, v in tunnel.cpu().items()
        }
        result["wall_seconds"] = round(wall, 3)
        if dead := tunnel.alive():
            result.setdefault("error", f"process died: {dead}")
    if say:
        progress.print(f"  [dim]{label:>12}[/] {name:<9} {brief(name, result)}")
    return result


def brief(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"[red]{r['error']}[/]"
    mark = "" if r.get("verified", True) else f" [red]NOT VERIFIED {r.get('detail', '')}[/]"
    if name in ("upload", "download"):
        return f"{r['bytes'] / MB:.0f} MB at {r['mbps']:.1f} MB/s{mark}"
    if name == "duplex":
        rates = f"up {r['up_mbps']:.1f} / down {r['down_mbps']:.1f} MB/s"
        return f"{r['bytes'] / MB:.0f} MB each way, {rates}{mark}"
    if name in ("rtt", "connect"):
        rounds = "/".join(f"{x:.0f}" for x in r.get("round_p50_us", []))
        rounds = f" (p50 of each round: {rounds})" if rounds else ""
        return f"p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs{rounds}"
    if name == "parallel":
        return (
            f"{r['verified_count']}/{r['connections']} verified in {r['seconds']:.2f} s, "
            f"slowest connect {r['connect_ms_max']:.0f} ms, "
            f"{r['connects_over_900ms']} connects over 900 ms {r['failures'] or ''}"
        )
    if name == "memory":
        per = f"server {r['server_kib_per_conn']:.1f}, client {r['client_kib_per_conn']:.1f}"
        opened = f"opened in {r['open_seconds']:.2f} s (listen overflows {r['listen_overflows']})"
        return f"{per} KiB/conn, {opened}{mark}"
    return ""


async def size_for(
    label: str, ports: dict[str, int], targets: Targets, plan: Plan
) -> tuple[int, float]:
    """A warm-up upload; pick N so one transfer takes about ``plan.seconds``."""
    probe = plan.min_mb * MB
    async with asyncio.timeout(120):
        result = await upload(ports, targets, probe)
    if not result["verified"]:
        raise AssertionError(f"warm-up upload not verified: {result['detail']}")
    rate = result["mbps"]
    mb = int(max(plan.min_mb, min(plan.max_mb, rate * plan.seconds)))
    return mb * MB, rate


async def measure_all(
    plan: Plan, targets: Targets, tunnels: list[Tunnel], results: dict[str, Any]
) -> None:
    """Each metric on direct, then on every tunnel, in turn; results fill in as they come."""
    results["direct"] = {}
    live = [t for t in tunnels if not t.skipped]
    for t in live:
        results[t.label] = {}

    def on(metric: str) -> list[tuple[str, dict[str, int], Tunnel | None]]:
        """direct, then every live column that runs ``metric``."""
        return [
            ("direct", targets.ports, None),
            *((t.label, t.forwards, t) for t in live if t.does(metric)),
        ]

    # Memory first, on fresh flyway processes (before throughput runs grow their heaps).
    progress.rule("idle connections")
    for t in live:
        if not t.does("memory"):
            continue
        assert t.server is not None
        assert t.client is not None
        results[t.label]["memory"] = await guarded(
            t.label,
            "memory",
            t,
            idle_memory(t.forwards, targets, t.server.pid, t.client.pid, plan.idle),
        )

    progress.rule("latency")
    for name, measure, count, warmup, seconds in (
        ("rtt", round_trips, plan.rtt, plan.rtt_warmup, 60),
        ("connect", connects, plan.connects, plan.connect_warmup, 90),
    ):
        # In rounds, interleaved across the columns: on a small VM latency can switch
        # between modes for seconds at a time (which core wakes whom), and every
        # column should see the same mix.
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in on(name)}
        for _ in range(plan.rounds):
            for label, ports, t in on(name):
                if rounds[label] and "error" in rounds[label][-1]:
                    continue
                rounds[label].append(
                    await guarded(
                        label,
                        name,
                        t,
                        with_timeout(
                            seconds / plan.rounds,
                            measure(ports, count // plan.rounds, max(1, warmup // plan.rounds)),
                        ),
                        say=False,
                    )
                )
        for label, done in rounds.items():
            results[label][name] = pooled(done)
            progress.print(f"  [dim]{label:>12}[/] {name:<9} {brief(name, results[label][name])}")
    progress.rule("parallel")
    for label, ports, t in on("parallel"):
        results[label]["parallel"] = await guarded(
            label,
            "parallel",
            t,
            with_timeout(60, parallel(ports, plan.parallel, plan.parallel_bytes)),
        )

    progress.rule("throughput")
    sizes: dict[str, tuple[int, float]] = {}
    endpoints = on("upload")  # upload, download and duplex run on the same columns
    for label, ports, t in endpoints:
        if t is not None and t.alive():
            continue
        try:
            sizes[label] = await size_for(label, ports, targets, plan)
        except Exception as exc:
            for name in ("upload", "download", "duplex"):
                results[label][name] = {
                    "error": f"warm-up failed: {type(exc).__name__}: {exc}"[:300]
                }
            progress.print(f"  [dim]{label:>12}[/] [red]warm-up failed: {exc!r}[/]")
            continue
        nbytes = sizes[label][0]
        for seed in (SEED_UP, SEED_DOWN, SEED_DUPLEX_UP, SEED_DUPLEX_DOWN):
            pattern_hash(nbytes, seed)  # outside the timed part
    for name, run in (("upload", upload), ("download", download), ("duplex", duplex)):
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sizes}
        for _ in range(plan.repeats):  # interleaved, so drift hits every column alike
            for label, ports, t in endpoints:
                if label not in sizes:
                    results[label].setdefault(name, {"error": "not run"})
                    continue
                nbytes, rate = sizes[label]
                budget = max(30.0, nbytes / MB / max(rate, 0.1) * 6 + 10)
                runs[label].append(
                    await guarded(label, name, t, with_timeout(budget, run(ports, targets, nbytes)))
                )
        for label, done in runs.items():
            results[label][name] = median_run(done)
    for t in live:  # how far the heaps grew over the whole run
        assert t.server is not None
        assert t.client is not None
        if not t.alive():
            results[t.label]["rss_at_end"] = {
                "server_kib": rss_kib(t.server.pid),
                "client_kib": rss_kib(t.client.pid),
            }


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency result from its rounds: stats over all samples (a failed round wins)."""
    for r in rounds:
        if "error" in r:
            return r
    samples = [x for r in rounds for x in r["raw_us"]]
    return {
        **stats(samples),
        "rounds": len(rounds),
        "round_p50_us": [r["p50_us"] for r in rounds],
        "cpu_seconds": {
            k: round(sum(r.get("cpu_seconds", {}).get(k, 0.0) for r in rounds), 3)
            for k in rounds[0].get("cpu_seconds", {})
        },
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by rate (a failed or unverified run wins, so it is never hidden)."""
    bad = [r for r in runs if "error" in r or not r.get("verified", True)]
    if bad:
        chosen = dict(bad[0])
    else:
        ordered = sorted(
            runs, key=lambda r: r.get("mbps", r.get("up_mbps", 0) + r.get("down_mbps", 0))
        )
        chosen = dict(ordered[len(ordered) // 2])
    chosen["runs"] = [
        {k: v for k, v in r.items() if k.endswith(("mbps", "verified")) or k == "error"}
        for r in runs
    ]
    return chosen


async def with_timeout(seconds: float, coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        return await coro


def raise_fd_limit(want: int = 65536) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def installed_transports(python: str) -> list[str] | None:
    """Transport names from `flyway plugins --json` (None if that cannot be read)."""
    with contextlib.suppress(Exception):
        listing = subprocess.run(
            [python, "-m", "flyway_core", "plugins", "--json"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            timeout=30,
        )
        names = []
        for plugin in json.loads(listing.stdout):
            for item in plugin.get("provides", []):
                if item.startswith("transports:"):
                    names += [x.split()[0] for x in item.split(":", 1)[1].split(",") if x.strip()]
        return names
    return None


def has_uvloop(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import uvloop"], capture_output=True, check=False)
    return probe.returncode == 0


def prepare(args: argparse.Namespace) -> tuple[Plan, list[Tunnel], str] | None:
    """Everything before the event loop: plan, fd limit, checks, one Tunnel per column."""
    plan = replace(QUICK if args.quick else FULL)
    if args.size:
        plan.max_mb = args.size
    limits = raise_fd_limit()
    if limits[0] < 4 * plan.idle + 256:
        progress.print(f"[yellow]fd limit {limits[0]} is low for {plan.idle} idle connections[/]")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for stale in [
        *args.log_dir.glob("*-server.log"),
        *args.log_dir.glob("*-client.log"),
        *args.log_dir.glob("*nginx.log"),
        *args.log_dir.glob("squid.log"),
    ]:
        stale.unlink()
    check = subprocess.run(
        [args.python, "-c", "import flyway_core.cli"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        progress.print(f"[red]{args.python} cannot import flyway_core:[/] {last}")
        return None
    args.flyway_uvloop = has_uvloop(args.python)
    installed = installed_transports(args.python)
    if args.uvloop and not args.flyway_uvloop:
        progress.print(
            "[yellow]--uvloop: uvloop is not installed for flyway; nothing to compare[/]"
        )
    shim = ""
    tunnels: list[Tunnel] = []
    if not args.no_bare_relay:
        for mode in dict.fromkeys(args.bare_relay or ["protocols"]):
            label = BARE if mode == "protocols" else f"{BARE} {mode}"
            tunnels.append(
                BareRelay(label, BARE, args.python, args.log_dir, None, flags=BARE_MODES[mode])
            )
        if "ws" in (args.transport or DEFAULT_TRANSPORTS):
            tunnels.append(BareWebSocketRelay(BARE_WS, BARE_WS, args.python, args.log_dir, None))
    args.hops = Intermediaries(args.log_dir)
    for name in dict.fromkeys(args.transport or DEFAULT_TRANSPORTS):
        via = VIA.get(name, "")
        base = name.split("-")[0]
        tunnels.append(
            Tunnel(name, name, args.python, args.log_dir, args.window, via=via, hops=args.hops)
        )
        if installed is not None and base not in installed and not TRANSPORT_FLAGS[name]:
            # Without a flag the client silently picks another transport: do not mislabel it.
            tunnels[-1].skipped = (
                f"transport {base!r} is not installed (installed: {', '.join(installed) or 'none'})"
                "; the client would fall back to another one"
            )
            continue
        if via and (why := args.hops.missing(via)):
            tunnels[-1].skipped = f"needs {via}: {why}"
            continue
        if args.uvloop and args.flyway_uvloop:
            if not shim:
                shim = tempfile.mkdtemp(prefix="flyway-bench-")
                Path(shim, "uvloop.py").write_text('raise ImportError("hidden by bench/run.py")\n')
            path = os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH", "")]))
            env = {"PYTHONPATH": path}
            label = f"{name}/asyncio"
            tunnels.append(
                Tunnel(label, name, args.python, args.log_dir, args.window, env, via, args.hops)
            )
    args.fd_limit = limits[0]
    return plan, tunnels, shim


async def run(
    args: argparse.Namespace, plan: Plan, tunnels: list[Tunnel], results: dict[str, Any]
) -> tuple[Targets, str]:
    """Start targets and flyway, measure into ``results``, stop everything (always)."""
    targets = Targets()
    await targets.start()
    loop_name = type(asyncio.get_running_loop()).__module__
    try:
        progress.rule("starting flyway")
        for t in tunnels:
            if t.skipped:
                progress.print(f"  [yellow]{t.label}: skipped: {t.skipped}[/]")
            elif await t.start(targets.ports):
                assert t.server is not None
                assert t.client is not None
                progress.print(f"  {t.label}: server pid {t.server.pid}, client pid {t.client.pid}")
            else:
                progress.print(f"  [yellow]{t.label}: skipped: {t.skipped}[/]")
        async with asyncio.timeout(args.deadline):
            await measure_all(plan, targets, tunnels, results)
    except TimeoutError:
        progress.print(f"[red]gave up after --deadline {args.deadline:g} s; reporting what ran[/]")
        results.setdefault("_driver", {})["deadline"] = {"error": "deadline reached"}
    finally:
        for t in tunnels:
            await t.stop()
        args.hops.close()  # after flyway, so no client sees its proxy vanish first
        await targets.close()
    return targets, loop_name


def write_report(
    args: argparse.Namespace,
    plan: Plan,
    tunnels: list[Tunnel],
    results: dict[str, Any],
    targets: Targets,
    loop_name: str,
    started: float,
) -> dict[str, Any]:
    logs = {
        t.label: {
            "server": read_lines(t.server_log),
            "client": read_lines(t.client_log),
            "exit": t.exit_codes,
        }
        for t in tunnels
    }
    for name in args.hops.children_closed:
        logs[name] = {"log": read_lines(args.hops.log_path(name))[-200:]}
    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "flyway_python": args.python,
            "flyway_uvloop": args.flyway_uvloop,
            "driver_loop": loop_name,
            "git": git_revision(),
            "quick": args.quick,
            "window": args.window,
            "fd_limit": args.fd_limit,
            "plan": plan.__dict__,
        },
        "transports": [t.label for t in tunnels],
        "skipped": {t.label: t.skipped for t in tunnels if t.skipped},
        "results": results,
        "target_errors": targets.errors,
        "process_output": logs,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def git_revision() -> str:
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
        return rev.stdout.strip()
    return ""


# --------------------------------------------------------------------------- report

ROWS: list[tuple[str, str, str, str]] = [
    # (row title, metric, field, how to compare tunnel with direct)
    ("upload MB/s", "upload", "mbps", "ratio"),
    ("download MB/s", "download", "mbps", "ratio"),
    ("duplex up MB/s", "duplex", "up_mbps", "ratio"),
    ("duplex down MB/s", "duplex", "down_mbps", "ratio"),
    ("transfer size MB", "upload", "bytes", ""),
    ("64 B round trip p50 µs", "rtt", "p50_us", "delta"),
    ("64 B round trip p99 µs", "rtt", "p99_us", "delta"),
    ("connect + 1st byte p50 µs", "connect", "p50_us", "delta"),
    ("connect + 1st byte p99 µs", "connect", "p99_us", "delta"),
    ("200 \u00d7 64 KiB echo verified", "parallel", "verified_count", ""),
    ("200 \u00d7 64 KiB echo seconds", "parallel", "seconds", "ratio"),
    ("server KiB / idle conn (1000)", "memory", "server_kib_per_conn", ""),
    ("client KiB / idle conn (1000)", "memory", "client_kib_per_conn", ""),
    ("server RSS MiB before → with", "memory", "server_rss_kib", ""),
    ("1000 idle conns: open / release s", "memory", "open_seconds", ""),
]


def cell(metric: str, fieldname: str, r: dict[str, Any] | None) -> tuple[str, float | None]:
    if not r:
        return "—", None
    if "error" in r:
        return "[red]error[/]", None
    value = r.get(fieldname)
    if value is None:
        return "—", None
    ok = r.get("verified", True)
    if metric == "duplex":
        ok = r.get("up_verified" if fieldname.startswith("up") else "down_verified", ok)
    if fieldname == "bytes":
        text = f"{value / MB:.0f}"
    elif fieldname == "verified_count":
        text = f"{value}/{r['connections']}"
    elif fieldname == "server_rss_kib":
        text = f"{value['before'] / 1024:.1f} → {value['with'] / 1024:.1f}"
    elif fieldname == "open_seconds":
        text = f"{value:.2f} / {r['release_seconds']:.2f}"
    elif fieldname.endswith("_us"):
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    if not ok:
        text = f"[red]{text} ✗[/]"
    return text, float(value) if isinstance(value, int | float) else None


def print_table(results: dict[str, dict[str, Any]], live: list[Tunnel]) -> None:
    table = Table(title="flyway benchmark: direct vs through the tunnel", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("direct", justify="right")
    for t in live:
        table.add_column(t.header.format(t.label), justify="right")
        table.add_column(f"ratio ({t.label})", justify="right", style="cyan")
    for title, metric, fieldname, compare in ROWS:
        direct_text, direct_value = cell(metric, fieldname, results["direct"].get(metric))
        row = [title, direct_text]
        for t in live:
            text, value = cell(metric, fieldname, results[t.label].get(metric))
            row.append(text)
            if compare == "ratio" and value is not None and direct_value:
                row.append(f"{value / direct_value:.2f}\u00d7")
            elif compare == "delta" and value is not None and direct_value is not None:
                row.append(f"{value - direct_value:+,.0f} µs")
            else:
                row.append("")
        table.add_row(*row)
    out.print(table)


def print_notes(report: dict[str, Any], tunnels: list[Tunnel], hops: Intermediaries) -> list[str]:
    problems: list[str] = []
    for name, lines in hops.notable().items():
        out.print(
            f"[yellow]{name} logged {len(lines)} warning/error line(s)[/] "
            f"({hops.log_path(name)}), first: {lines[0][:200]}"
        )
    for label, reason in report["skipped"].items():
        out.print(f"[yellow]skipped {label}:[/] {reason}")
    for label, metrics in report["results"].items():
        for metric, r in metrics.items():
            if "error" in r:
                problems.append(f"{label} {metric}: {r['error']}")
            elif not r.get("verified", True):
                problems.append(
                    f"{label} {metric}: not verified: {r.get('detail') or r.get('failures')}"
                )
    problems += [f"target: {e}" for e in report["target_errors"][:10]]
    for t in tunnels:
        if t.skipped:
            continue
        for name, path in (("server", t.server_log), ("client", t.client_log)):
            lines = read_lines(path)
            if lines:
                problems.append(
                    f"{t.label} {name} wrote {len(lines)} line(s) with -q, first: {lines[0][:160]}"
                )
        for name, code in t.exit_codes.items():
            if code != 0:
                problems.append(f"{t.label} {name} exit after SIGTERM: {code}")
    for t in tunnels:
        if t.skipped:
            continue
        cpu = {
            m: r.get("cpu_seconds", {})
            for m, r in report["results"][t.label].items()
            if m in ("upload", "download", "duplex") and "error" not in r
        }
        parts = []
        for m, c in cpu.items():
            r = report["results"][t.label][m]
            gb = r["bytes"] / 1e9 * (2 if m == "duplex" else 1)
            parts.append(f"{m} {c.get('server', 0) / gb:.1f}+{c.get('client', 0) / gb:.1f}")
        if parts:
            out.print(f"[dim]{t.label}: CPU s per GB moved (server+client): {', '.join(parts)}[/]")
    for p in problems:
        out.print(f"[red]problem:[/] {p}")
    return problems


# --------------------------------------------------------------------------- targets

TARGET_WS, TARGET_HTTP, TARGET_NGINX = "ws", "http", "http-nginx"


def evaluate_targets(
    results: dict[str, dict[str, Any]], live: list[Tunnel]
) -> list[dict[str, Any]]:
    """The project's targets, each PASS/FAIL (or n/a) from this run's own numbers."""
    direct = results.get("direct", {})
    checks: list[dict[str, Any]] = []

    def add(target: str, passed: bool | None, measured: str) -> None:
        checks.append({"target": target, "pass": passed, "measured": measured})

    def usable(r: dict[str, Any] | None) -> str:
        """'' when ``r`` holds a verified measurement, else why not."""
        if not r:
            return "not measured"
        if "error" in r:
            return f"error: {r['error']}"
        if not r.get("verified", True):
            return f"not verified: {r.get('detail', '')}"
        return ""

    def rate_ratio(label: str, metric: str, fieldname: str) -> tuple[float | None, str]:
        mine, base = results.get(label, {}).get(metric), direct.get(metric)
        why = usable(mine) or usable(base)
        if why:
            return None, why
        assert mine is not None
        assert base is not None
        return mine[fieldname] / base[fieldname], ""

    def throughput(label: str, minimum: float, who: str) -> None:
        for metric, word in (("upload", "upload"), ("download", "download")):
            value, why = rate_ratio(label, metric, "mbps")
            target = f"{who} one-stream {word} ≥ {minimum:.0%} of direct"
            if value is None:
                add(target, None if why == "not measured" else False, why)
            else:
                add(target, value >= minimum, f"{value:.2f}\u00d7")

    def rtt_p50(label: str) -> tuple[float | None, str]:
        r = results.get(label, {}).get("rtt")
        why = usable(r)
        return (None, why) if why else (r["p50_us"], "")  # type: ignore[index]

    def verdict_na(target: str, why: str) -> None:
        add(target, None if why == "not measured" else False, why)

    # WebSocket
    throughput(TARGET_WS, 0.30, "WS")
    # "Both directions at once not below either alone": the bytes a duplex transfer moves
    # per second, both ways together, against each one-way transfer, all through ws.
    ws = results.get(TARGET_WS, {})
    target = "WS both directions at once (up + down) not below either alone"
    why = usable(ws.get("duplex")) or usable(ws.get("upload")) or usable(ws.get("download"))
    if why:
        verdict_na(target, why)
    else:
        both = ws["duplex"]["up_mbps"] + ws["duplex"]["down_mbps"]
        alone = max(ws["upload"]["mbps"], ws["download"]["mbps"])
        add(
            target,
            both >= alone,
            f"{both:,.0f} MB/s at once vs {ws['upload']['mbps']:,.0f} up,"
            f" {ws['download']['mbps']:,.0f} down alone",
        )
    ws_rtt, why = rtt_p50(TARGET_WS)
    direct_rtt, why2 = rtt_p50("direct")
    target = "WS 64 B round trip p50 ≤ direct + 250 µs"
    if ws_rtt is None or direct_rtt is None:
        verdict_na(target, why or why2)
    else:
        add(
            target,
            ws_rtt <= direct_rtt + 250,
            f"{ws_rtt:,.0f} µs, direct {direct_rtt:,.0f} µs ({ws_rtt - direct_rtt:+,.0f} µs)",
        )
    connect = results.get(TARGET_WS, {}).get("connect")
    target = "WS connect + 1st byte p50 ≤ 1.5 ms"
    if why := usable(connect):
        verdict_na(target, why)
    else:
        assert connect is not None
        add(target, connect["p50_us"] <= 1500, f"{connect['p50_us']:,.0f} µs")

    # Every tunnel column
    for t in live:
        if t.does("parallel"):
            r = results.get(t.label, {}).get("parallel") or {}
            target = f"{t.label}: 200/200 parallel echoes verified"
            if "verified_count" not in r:
                verdict_na(target, usable(r) or "not measured")
            else:
                add(
                    target,
                    r["verified_count"] == r["connections"] == 200,
                    f"{r['verified_count']}/{r['connections']}",
                )
    for t in live:
        if t.does("memory"):
            r = results.get(t.label, {}).get("memory")
            target = f"{t.label}: 1000 idle forwarded conns ≤ 20 KiB each on the server"
            if why := usable(r):
                verdict_na(target, why)
            else:
                assert r is not None
                per = r["server_kib_per_conn"]
                add(
                    target,
                    per <= 20 and r["reached_target"] == 1000,
                    f"{per:.1f} KiB ({r['reached_target']} reached the target)",
                )

    # HTTP POST, direct and through nginx
    for label, limit_ms, minimum, who in (
        (TARGET_HTTP, 3, 0.15, "HTTP"),
        (TARGET_NGINX, 10, 0.10, "HTTP via nginx"),
    ):
        value, why = rtt_p50(label)
        target = f"{who} 64 B round trip p50 ≤ {limit_ms} ms"
        if value is None:
            verdict_na(target, why)
        else:
            add(target, value <= limit_ms * 1000, f"{value / 1000:.2f} ms")
        throughput(label, minimum, who)
    return checks


def reference_lines(results: dict[str, dict[str, Any]], live: list[Tunnel]) -> list[str]:
    """What the reference columns and direct say beside the targets (no verdicts)."""
    bare_label = next((t.label for t in live if type(t) is BareRelay), "")
    direct, bare = results.get("direct", {}), results.get(bare_label, {})
    bare_ws = results.get(BARE_WS, {})
    lines = []
    for metric, word in (("rtt", "64 B round trip"), ("connect", "connect + 1st byte")):
        d, b = direct.get(metric) or {}, bare.get(metric) or {}
        if "p50_us" not in d or "p50_us" not in b:
            continue
        parts = [f"{bare_label} {b['p50_us'] - d['p50_us']:+,.0f} µs over direct"]
        for label in (TARGET_WS, TARGET_HTTP, TARGET_NGINX):
            mine = results.get(label, {}).get(metric) or {}
            if "p50_us" in mine:
                parts.append(f"{label} {mine['p50_us'] - b['p50_us']:+,.0f} µs over it")
        lines.append(f"{word} p50: " + "; ".join(parts))
        floor, mine = bare_ws.get(metric) or {}, results.get(TARGET_WS, {}).get(metric) or {}
        if "p50_us" in floor:
            parts = [f"{BARE_WS} {floor['p50_us'] - d['p50_us']:+,.0f} µs over direct"]
            if "p50_us" in mine:
                parts.append(f"{TARGET_WS} {mine['p50_us'] - floor['p50_us']:+,.0f} µs over it")
            lines.append(f"{word} p50: " + "; ".join(parts))
    # Duplex against one-way, each as a ratio to direct's own (CPU contention shows here).
    ratios = {}
    for metric, key in (("upload", "mbps"), ("download", "mbps"), ("duplex", "up_mbps")):
        mine, base = results.get(TARGET_WS, {}).get(metric), direct.get(metric)
        if mine and base and key in mine and key in base:
            ratios[metric] = mine[key] / base[key]
            if metric == "duplex":
                ratios["duplex down"] = mine["down_mbps"] / base["down_mbps"]
    # The same at-once check on direct TCP: on a machine whose cores are full it fails too.
    at_once, up, down = (direct.get(metric) or {} for metric in ("duplex", "upload", "download"))
    if "up_mbps" in at_once and "mbps" in up and "mbps" in down:
        both = at_once["up_mbps"] + at_once["down_mbps"]
        lines.append(
            f"direct both directions at once: {both:,.0f} MB/s vs {up['mbps']:,.0f} up,"
            f" {down['mbps']:,.0f} down alone"
        )
    if len(ratios) == 4:
        lines.append(
            f"{TARGET_WS} ratios to direct: duplex up {ratios['duplex']:.2f}\u00d7,"
            f" down {ratios['duplex down']:.2f}\u00d7; alone up {ratios['upload']:.2f}\u00d7,"
            f" down {ratios['download']:.2f}\u00d7"
        )
    return lines


def print_targets(checks: list[dict[str, Any]], references: list[str]) -> None:
    out.print("[bold]targets[/] (from this run's numbers)")
    for c in checks:
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[dim]n/a [/]"}[c["pass"]]
        out.print(f"  {mark}  {c['target']}: {c['measured']}")
    for line in references:
        out.print(f"  [dim]ref.[/]  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--transport",
        action="append",
        choices=sorted(TRANSPORT_FLAGS),
        help=(
            "column to measure (repeatable; default: "
            f"{' '.join(DEFAULT_TRANSPORTS)}): ws=-w, http=no flag, http-squid=http with "
            "--proxy SQUID, http-nginx=http dialing nginx in front of the server, kcp=-K"
        ),
    )
    parser.add_argument(
        "--no-bare-relay",
        action="store_true",
        help=(
            "leave out the bare relay reference columns (bench/bare_relay.py, and"
            " bench/ws_relay.py beside ws)"
        ),
    )
    parser.add_argument(
        "--bare-relay",
        action="append",
        choices=list(BARE_MODES),
        metavar="MODE",
        help=(
            "bare relay variant, repeatable (default protocols, the floor): "
            + ", ".join(BARE_MODES)
        ),
    )
    parser.add_argument("--quick", action="store_true", help="smaller transfers and fewer samples")
    parser.add_argument(
        "--json",
        default=str(ROOT / "bench" / "results" / "latest.json"),
        help="where to write results",
    )
    parser.add_argument(
        "--size", type=int, help="largest single-direction transfer in MB (default 200, quick 32)"
    )
    parser.add_argument(
        "-W", "--window", type=int, help="pass -W BYTES (per-stream window) to server and client"
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="also run each transport with uvloop hidden from flyway",
    )
    default_python = ROOT / ".venv" / "bin" / "python"
    parser.add_argument(
        "--python",
        default=str(default_python if default_python.exists() else sys.executable),
        help="interpreter that runs `-m flyway_core` (default .venv/bin/python)",
    )
    parser.add_argument(
        "--deadline", type=float, default=600, help="give up measuring after this many seconds"
    )
    args = parser.parse_args()
    args.log_dir = Path(args.json).resolve().parent / "logs"
    prepared = prepare(args)
    if prepared is None:
        sys.exit(2)
    plan, tunnels, shim = prepared
    results: dict[str, Any] = {}
    started = time.time()
    try:
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            targets, loop_name = asyncio.run(run(args, plan, tunnels, results))
        else:
            targets, loop_name = uvloop.run(run(args, plan, tunnels, results))
    except KeyboardInterrupt:
        progress.print("[yellow]interrupted; flyway processes stopped[/]")
        sys.exit(130)
    finally:
        for t in tunnels:
            t.kill_now()
        args.hops.close()
        if shim:
            shutil.rmtree(shim, ignore_errors=True)
    live = [t for t in tunnels if not t.skipped]
    checks, references = evaluate_targets(results, live), reference_lines(results, live)
    report = write_report(args, plan, tunnels, results, targets, loop_name, started)
    report["targets"] = checks
    report["reference"] = references
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(results, live)
    print_targets(checks, references)
    problems = print_notes(report, tunnels, args.hops)
    out.print(f"[dim]JSON: {args.json}   logs: {args.log_dir}[/]")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
