"""``-P http://``'s clocks: whose slowness each timeout is for, and what a slow peer can hold.

The site's read timeout starts once the request went up whole (nginx's
``proxy_read_timeout``): a client uploading slowly is the door's body timeout's
business. Small bodies are read before a pooled connection is taken (nginx's
``proxy_request_buffering``), so clients that declare a body and send nothing
hold no connection to the site. A site that floods interim answers gets a 502,
not a client held for good. The sites are real aiohttp or asyncio servers on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from fallback_site import door
from flyway_fallback.reverse_proxy.upstream import MAX_INTERIM

from flyway_core.testing.probes import Probe, answer
from flyway_core.testing.sites import web_site


@contextlib.asynccontextmanager
async def reading_site() -> AsyncIterator[int]:
    """An aiohttp site that reads each body whole, then says how long it was."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.path} got {len(await request.read())} bytes")

    app = web.Application(client_max_size=16 << 20)
    app.router.add_route("*", "/{tail:.*}", handle)
    async with web_site(app) as port:
        yield port


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_site(serve: Serve) -> AsyncIterator[int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await serve(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        return head, await reader.readexactly(length)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_slow_upload_is_not_the_sites_slowness(chunked: bool) -> None:
    """2 MiB at once (over what the HTTP POST transport reads to judge and the buffer),
    then 9 bytes over 1.35 s, with a read timeout of 0.5 s: a 200."""
    first = b"f" * (2 << 20)
    async with reading_site() as site:
        async with door(f"http://127.0.0.1:{site}", reverse_proxy_timeout=0.5) as (_, bound):
            reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
            framing = (
                b"Transfer-Encoding: chunked"
                if chunked
                else b"Content-Length: %d" % (len(first) + 9)
            )
            writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\n%b\r\n\r\n" % framing)
            writer.write(b"%x\r\n%b\r\n" % (len(first), first) if chunked else first)
            for _ in range(9):
                await asyncio.sleep(0.15)
                writer.write(b"1\r\nx\r\n" if chunked else b"x")
            if chunked:
                writer.write(b"0\r\n\r\n")
            head, body = await _read_answer(reader)
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert body == b"/up got %d bytes" % (len(first) + 9)


async def test_a_site_that_takes_no_body_and_says_nothing_gets_504() -> None:
    """The read timer waits for the body's end, so the send side has its own (nginx's
    ``proxy_send_timeout``): a site that reads nothing of an 8 MiB upload is given up."""

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)

    async with raw_site(deaf) as site:
        async with door(f"http://127.0.0.1:{site}", reverse_proxy_timeout=0.5) as (_, bound):
            reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
            size = 8 << 20
            writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            start = time.perf_counter()
            writer.write(b"u" * size)
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
    assert head.startswith(b"HTTP/1.1 504"), head
    assert time.perf_counter() - start < 3


async def test_clients_that_declare_a_body_and_send_nothing_hold_no_connection() -> None:
    async with reading_site() as site:
        spec = f"http://127.0.0.1:{site}"
        async with door(spec, reverse_proxy_connections=2, reverse_proxy_timeout=1.0) as (_, b):
            holders = [await asyncio.open_connection("127.0.0.1", b.port) for _ in range(4)]
            for _, writer in holders:
                writer.write(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            await asyncio.sleep(0.2)
            probe = Probe("bystander", b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            bystander = await answer(b.port, probe, limit=3)
            for _, writer in holders:  # and their bodies, when they come, go up whole
                writer.write(b"0123456789")
            answers = [await _read_answer(reader) for reader, _ in holders]
            for _, writer in holders:
                writer.close()
    assert [r.status for r in bystander.responses] == [200]  # a held pool: a 504, or nothing
    assert [body for _, body in answers] == [b"/form got 10 bytes"] * 4


async def test_a_site_flooding_interim_answers_gets_502() -> None:
    """100 Continue every 20 ms, never a final answer (each read resets the read timer)."""

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for _ in range(500):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    async with raw_site(flood) as site:
        async with door(f"http://127.0.0.1:{site}", reverse_proxy_timeout=0.5) as (_, bound):
            got = await answer(bound.port, Probe("1xx", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [r.status for r in got.responses] == [502]  # uncapped: nothing within 5 s


async def test_a_few_interim_answers_still_come_before_the_answer() -> None:
    async def some(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INTERIM)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_site(some) as site:
        async with door(f"http://127.0.0.1:{site}") as (_, bound):
            got = await answer(bound.port, Probe("1xx", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [r.status for r in got.responses] == [200]
    assert got.responses[0].body == b"ok"
