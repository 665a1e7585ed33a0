"""The front door hands a connection to a ``RawFallback`` whole, or keeps answering itself.

A fallback here is a test ``RawFallback`` whose pipe records what it gets and
answers one line, so what is checked is the door's part alone: which
connections are handed over (an unparsable *first* request; a handler's
``claim``), with exactly the bytes the peer sent, before and after; and what the
door says when the pipe cannot be opened.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from flyway_core import Address, Settings
from flyway_core.frontdoor_handover import RawFallback, claim
from flyway_core.frontdoor_pages import page, page_body
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.server import FlywayServer
from flyway_core.testing.probes import Probe, answer

GARBAGE = b"\x16\x03\x01 not http at all\r\n\r\n"


class RecordingPipe(asyncio.Protocol):
    """Takes a handed-over connection: keeps its bytes, answers ``piped`` once, closes."""

    def __init__(self) -> None:
        self.received = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.transport is not None and self.received.endswith(b"END"):
            self.transport.write(b"piped " + str(len(self.received)).encode())
            self.transport.close()


class PipingFallback:
    """A ``RawFallback``: claims upgrade requests, takes unparsable ones; 404 otherwise."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.pipes: list[RecordingPipe] = []

    async def open_pipe(self) -> asyncio.Protocol | None:
        if not self.reachable:
            return None
        self.pipes.append(RecordingPipe())
        return self.pipes[-1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "Upgrade" in request.headers:
            held = claim(request)
            assert held is not None
            pipe = await self.open_pipe()
            assert pipe is not None
            return held.hand_over(pipe, b"HEAD-AGAIN ")
        return page(404, request)


async def _serve(fallback: PipingFallback) -> tuple[asyncio.Task[None], int]:
    settings = Settings(password="pw")
    plugins = Plugins(make_plugin_manager(entry_points=False))
    server = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports={},
        fallback=fallback,
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=lambda event: None,
    )
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.serve(started=bound.set_result))
    return task, (await asyncio.wait_for(bound, 5)).port


async def _talk(port: int, *parts: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for part in parts:
        writer.write(part)
        await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        got = await reader.read()
    writer.close()
    return got


def test_the_fallback_is_a_raw_fallback() -> None:
    assert isinstance(PipingFallback(), RawFallback)


async def test_an_unparsable_first_request_reaches_the_pipe_byte_for_byte() -> None:
    fallback = PipingFallback()
    task, port = await _serve(fallback)
    try:
        got = await _talk(port, GARBAGE, b"more after it END")
    finally:
        task.cancel()
    (pipe,) = fallback.pipes
    assert pipe.received == GARBAGE + b"more after it END"
    assert got == f"piped {len(pipe.received)}".encode()


async def test_a_bad_request_after_a_good_one_gets_the_doors_page() -> None:
    fallback = PipingFallback()
    task, port = await _serve(fallback)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"</html>\r\n")
            writer.write(GARBAGE)
            second = await reader.read()
        writer.close()
    finally:
        task.cancel()
    assert first.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert second.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert not fallback.pipes


async def test_garbage_in_the_first_read_takes_the_good_request_before_it_along() -> None:
    """aiohttp's parser fails the whole read, so the site gets both, as sent."""
    fallback = PipingFallback()
    task, port = await _serve(fallback)
    good = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        await _talk(port, good + GARBAGE + b"END")
    finally:
        task.cancel()
    assert fallback.pipes[0].received == good + GARBAGE + b"END"


async def test_without_a_pipe_the_door_answers_as_nginx() -> None:
    task, port = await _serve(PipingFallback(reachable=False))
    try:
        got = await answer(port, Probe("garbage", GARBAGE))
    finally:
        task.cancel()
    assert [r.status for r in got.responses] == [400]
    assert got.responses[0].body == page_body(400) and got.closed


async def test_a_claimed_connection_gets_the_head_then_everything_after() -> None:
    fallback = PipingFallback()
    task, port = await _serve(fallback)
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    try:
        got = await _talk(port, upgrade + b"early ", b"late END")
    finally:
        task.cancel()
    (pipe,) = fallback.pipes
    assert pipe.received == b"HEAD-AGAIN early late END"
    assert got.startswith(b"piped ")
