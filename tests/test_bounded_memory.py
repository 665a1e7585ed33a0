"""Memory stays bounded against a peer that does not read.

A hostile client announces the largest window the protocol allows, opens streams
to a target that sends as fast as it can, and never reads what comes back. The
server (a real ``flyway`` process) may hold at most its own window per stream
plus a session queue and a constant: its send credit is capped at its own
``-W`` and a full session queue pauses the sockets feeding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import flyway_websocket
from flyway_http_post.server import DOWN_LIMIT
from flyway_procs import flyway

from flyway_core import Address, ServerURL, Settings
from flyway_core.protocol import MAX_WINDOW, ClientConnection, derive_master_key
from flyway_core.session import QUEUE_LIMIT
from flyway_core.testing import free_port, wait_port

PASSWORD = "bounded"
STREAMS = 4
WINDOW = 1 << 20  # the server's -W (the default)
SLACK = 40 << 20  # interpreter, aiohttp and buffers that do not grow with the peer's window


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _peak_rss(pid: int, before: int) -> int:
    """The highest RSS of ``pid`` over 4 s of a firehose against a peer that never reads."""
    peak = before
    for _ in range(40):
        await asyncio.sleep(0.1)
        peak = max(peak, _rss(pid))
    return peak


@contextlib.asynccontextmanager
async def _firehose() -> AsyncIterator[Address]:
    """A target that writes to every connection as fast as the kernel takes it."""
    chunk = bytes(1 << 16)

    async def pour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                writer.write(chunk)
                await writer.drain()

    server = await asyncio.start_server(pour, "127.0.0.1", 0)
    try:
        yield Address("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def test_a_client_that_never_reads_cannot_grow_the_server() -> None:
    port = free_port()
    async with _firehose() as target:
        with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q", "-W", str(WINDOW)]) as server:
            await asyncio.to_thread(wait_port, port)
            before = _rss(server.pid)
            connection = ClientConnection(
                derive_master_key(PASSWORD), now=time.time(), window=MAX_WINDOW
            )
            carrier = await flyway_websocket.WebSocketTransport().dial(
                ServerURL("http", "127.0.0.1", port), connection.hello(), Settings()
            )
            try:
                for _ in range(STREAMS):
                    connection.open_stream(target)
                await carrier.send(connection.data_to_send())
                peak = await _peak_rss(server.pid, before)
            finally:
                await carrier.close()
    print(f"server RSS growth: {(peak - before) >> 20} MiB")
    assert peak - before < STREAMS * WINDOW + QUEUE_LIMIT + SLACK, (
        f"server RSS grew by {(peak - before) >> 20} MiB"
    )


async def test_an_http_client_that_never_polls_cannot_grow_the_server() -> None:
    from flyway_http_post import HttpPostTransport
    from flyway_http_post.limits import Limits

    port = free_port()
    async with _firehose() as target:
        with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q", "-W", str(WINDOW)]) as server:
            await asyncio.to_thread(wait_port, port)
            before = _rss(server.pid)
            connection = ClientConnection(
                derive_master_key(PASSWORD), now=time.time(), window=MAX_WINDOW
            )
            settings = Settings(password=PASSWORD)
            carrier = await HttpPostTransport(Limits()).dial(
                ServerURL("http", "127.0.0.1", port), connection.hello(), settings
            )
            for task in list(carrier._tasks):  # no polls from now on: nothing is ever read
                task.cancel()
            try:
                for _ in range(STREAMS):
                    connection.open_stream(target)
                await carrier.send(connection.data_to_send())
                peak = await _peak_rss(server.pid, before)
            finally:
                await carrier.close()
    print(f"server RSS growth: {(peak - before) >> 20} MiB")
    held_by_design = STREAMS * WINDOW + QUEUE_LIMIT + DOWN_LIMIT
    assert peak - before < held_by_design + SLACK, f"server RSS grew by {(peak - before) >> 20} MiB"


async def test_a_client_facing_a_server_that_never_reads_stays_bounded() -> None:
    """The same bound the other way: a hostile server announces the largest window."""
    import base64

    from aiohttp import web

    from flyway_core.protocol import ReplayCache, ServerConnection

    master = derive_master_key(PASSWORD)
    over = asyncio.Event()

    async def hostile(request: web.Request) -> web.StreamResponse:
        token = request.cookies["sid"]
        hello = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        connection = ServerConnection(master, ReplayCache(), now=time.time(), window=MAX_WINDOW)
        connection.receive_data(hello, time.time())
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(connection.data_to_send())  # Welcome: "send me 2**31-1 per stream"
        assert request.transport is not None
        request.transport.pause_reading()  # and never read a byte
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await over.wait()
        return ws

    app = web.Application()
    app.router.add_get("/", hostile)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port, local = runner.addresses[0][1], free_port()
    chunk = bytes(1 << 16)
    writers: list[asyncio.StreamWriter] = []
    try:
        args = ["-w", "-q", "-W", str(WINDOW), "-L", f"{local}:127.0.0.1:9"]
        with flyway([*args, f"127.0.0.1:{port}", "-p", PASSWORD]) as client:
            await asyncio.to_thread(wait_port, local)
            before = _rss(client.pid)

            async def pour() -> None:
                _, writer = await asyncio.open_connection("127.0.0.1", local)
                writers.append(writer)
                with contextlib.suppress(ConnectionError, OSError):
                    while True:
                        writer.write(chunk)
                        await writer.drain()

            pours = [asyncio.create_task(pour()) for _ in range(STREAMS)]
            peak = await _peak_rss(client.pid, before)
            for task in pours:
                task.cancel()
    finally:
        for writer in writers:
            writer.transport.abort()
        over.set()
        await runner.cleanup()
    print(f"client RSS growth: {(peak - before) >> 20} MiB")
    assert peak - before < STREAMS * WINDOW + QUEUE_LIMIT + SLACK, (
        f"client RSS grew by {(peak - before) >> 20} MiB"
    )
