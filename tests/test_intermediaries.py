"""The intermediaries rig is real: squid refuses CONNECT and streams, nginx buffers, and
FaultRelay resets exactly the bodies it should. Also pins down what nginx does to
streamed responses and the 40 ms stall per request (tests/intermediaries/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

if TYPE_CHECKING:
    from intermediaries import Direction, FaultRelayFactory, NginxFactory

pytest_plugins = ["intermediaries"]

MB = 1 << 20
PIECE = 16 << 10
# what nginx does without the fix: its stock defaults (on x86-64 Linux)
NGINX_WITHOUT_FIX = "sendfile off; client_body_buffer_size 8k;"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- an aiohttp origin standing in for the flyway server -----------------------------


class QuickAckProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol: TCP_QUICKACK after every read, so the kernel ACKs at once."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport.get_extra_info("socket")
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


@dataclass
class Origin:
    """An aiohttp server on 127.0.0.1 that records what reaches it.

    POST /echo     the body back, with X-Body-SHA256 of what arrived (?chunked=1: chunked)
    POST /hash     ?size=N random bytes back; X-Body-SHA256 (received) and X-Reply-SHA256
    POST /small    "ok"
    POST /stream   ?chunks=&size=&gap= writes, each recorded; ?accel=no adds
                   X-Accel-Buffering: no; ?length=1 sends Content-Length instead of chunked
    """

    quickack: bool = False
    port: int = 0
    arrivals: list[float] = field(default_factory=list)  # handler start, monotonic
    received: list[int] = field(default_factory=list)  # body bytes per request, partial if cut
    writes: list[float] = field(default_factory=list)  # /stream write times
    headers: list[dict[str, str]] = field(default_factory=list)

    async def _body(self, request: web.Request) -> bytes:
        self.arrivals.append(time.monotonic())
        self.headers.append(dict(request.headers))
        body = bytearray()
        try:
            async for chunk in request.content.iter_any():
                body += chunk
        finally:
            self.received.append(len(body))
        return bytes(body)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        headers = {"X-Body-SHA256": sha(body)}
        if not request.query.get("chunked"):
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for start in range(0, len(body), PIECE):
            await response.write(body[start : start + PIECE])
        await response.write_eof()
        return response

    async def hash(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        reply = os.urandom(int(request.query.get("size", "0")))
        headers = {"X-Body-SHA256": sha(body), "X-Reply-SHA256": sha(reply)}
        return web.Response(body=reply, headers=headers)

    async def small(self, request: web.Request) -> web.Response:
        await self._body(request)
        return web.Response(body=b"ok")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        await self._body(request)
        chunks, size = int(request.query["chunks"]), int(request.query["size"])
        response = web.StreamResponse()
        if request.query.get("accel") == "no":
            response.headers["X-Accel-Buffering"] = "no"
        if request.query.get("length"):
            response.content_length = chunks * size
        await response.prepare(request)
        for i in range(chunks):
            if i:
                await asyncio.sleep(float(request.query["gap"]))
            self.writes.append(time.monotonic())
            await response.write(bytes([65 + i]) * size)
        await response.write_eof()
        return response

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Origin]:
        app = web.Application(client_max_size=64 * MB)
        for path, handler in [
            ("/echo", self.echo),
            ("/hash", self.hash),
            ("/small", self.small),
            ("/stream", self.stream),
        ]:
            app.router.add_post(path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        server = runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server
        if self.quickack:
            factory = lambda: QuickAckProtocol(server())  # noqa: E731
        listener = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        self.port = int(listener.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            listener.close()
            await runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin().running() as running:
        yield running


# --- raw HTTP/1.1 helpers ------------------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def slow_post(
    proxy_port: int, target: str, pieces: list[bytes], gap: float
) -> tuple[list[float], int, bytes]:
    """POST ``pieces`` with ``gap`` seconds between them; (send times, status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        length = sum(map(len, pieces))
        head = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n"
        writer.write(head.encode())
        sent = []
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(gap)
            writer.write(piece)
            await writer.drain()
            sent.append(time.monotonic())
        status, headers = await read_head(reader)
        body = await reader.readexactly(int(headers["content-length"]))
        return sent, status, body
    finally:
        writer.close()


# --- squid ------------------------------------------------------------------------------


async def test_squid_refuses_connect(squid_proxy: str, origin: Origin) -> None:
    port = int(squid_proxy.rsplit(":", 1)[1])
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        target = f"127.0.0.1:{origin.port}"
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        status, headers = await read_head(reader)
        writer.close()
    assert status == 403
    assert "squid" in headers.get("server", "")
    assert origin.arrivals == []


async def test_squid_forwards_an_absolute_form_post_of_5_mb_both_ways(
    squid_proxy: str, origin: Origin
) -> None:
    body = os.urandom(5 * MB)
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        # aiohttp sends plain-http requests to a proxy in absolute form, never CONNECT
        url = origin.url(f"/hash?size={5 * MB}")
        async with http.post(url, data=body, proxy=squid_proxy) as response:
            reply = await response.read()
            assert response.status == 200
            assert "squid" in response.headers.get("Via", "")
    assert response.headers["X-Body-SHA256"] == sha(body)
    assert len(reply) == 5 * MB
    assert sha(reply) == response.headers["X-Reply-SHA256"]
    assert "squid" in origin.headers[0].get("Via", "")


async def test_squid_streams_the_request_body(squid_proxy: str, origin: Origin) -> None:
    port = int(squid_proxy.rsplit(":", 1)[1])
    pieces = [os.urandom(20_000) for _ in range(3)]
    async with asyncio.timeout(10):
        sent, status, body = await slow_post(port, origin.url("/echo"), pieces, gap=0.5)
    assert status == 200
    assert body == b"".join(pieces)
    assert origin.arrivals[0] < sent[1], "squid held the request until its body was complete"


@pytest.mark.parametrize("query", ["", "length=1"], ids=["chunked", "content-length"])
@pytest.mark.parametrize("size", [200, 100_000])
async def test_squid_streams_responses(
    squid_proxy: str, origin: Origin, query: str, size: int
) -> None:
    stream = await streamed(origin, origin.url(""), size, query, proxy=squid_proxy)
    assert stream.released_by() == [0, 1, 2]


# --- nginx: request and response buffering ------------------------------------------------


async def test_nginx_holds_the_request_until_the_body_is_complete(
    nginx_cdn: NginxFactory, origin: Origin
) -> None:
    port = int(nginx_cdn(origin.port).rsplit(":", 1)[1])
    pieces = [os.urandom(20_000) for _ in range(4)]
    async with asyncio.timeout(10):
        sent, status, body = await slow_post(port, "/echo", pieces, gap=0.3)
    assert status == 200
    assert body == b"".join(pieces)
    assert origin.arrivals[0] > sent[-1], "nginx passed the request on before its body ended"


GAP = 0.4  # seconds between the origin's writes of a streamed response


@dataclass
class Streamed:
    """When the origin wrote each piece of a response, and when the client had it."""

    size: int  # bytes per write
    writes: list[float]  # origin write times
    arrivals: list[tuple[float, int]]  # (time, bytes so far) per client read

    def complete(self, i: int) -> float:
        """When the client had all of write ``i``."""
        return min(t for t, total in self.arrivals if total >= (i + 1) * self.size)

    def released_by(self) -> list[int]:
        """For each write, the last origin write before the client had all of it.

        [0, 1, 2]: every write arrived before the next one was made (streamed);
        [1, 2, 2]: each write was held until the next; [2, 2, 2]: until the end.
        """
        return [
            max(j for j, w in enumerate(self.writes) if w <= self.complete(i))
            for i in range(len(self.writes))
        ]


async def streamed(
    origin: Origin, base: str, size: int, query: str, proxy: str | None = None
) -> Streamed:
    """POST to /stream: three writes of ``size`` bytes, GAP seconds apart."""
    origin.writes.clear()
    url = f"{base}/stream?chunks=3&size={size}&gap={GAP}&{query}"
    arrivals: list[tuple[float, int]] = []
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.post(url, data=b"x", proxy=proxy) as response:
            assert response.status == 200
            total = 0
            async for chunk in response.content.iter_any():
                total += len(chunk)
                arrivals.append((time.monotonic(), total))
    assert total == 3 * size
    return Streamed(size, list(origin.writes), arrivals)


@pytest.mark.parametrize(
    ("query", "size", "released_by"),
    [
        pytest.param("accel=no", 200, [0, 1, 2], id="chunked-accel-no-small"),
        pytest.param("accel=no", 100_000, [0, 1, 2], id="chunked-accel-no-large"),
        pytest.param("length=1&accel=no", 200, [0, 1, 2], id="length-accel-no-small"),
        pytest.param("", 200, [0, 1, 2], id="chunked-buffered-small"),
        pytest.param("", 8000, [1, 2, 2], id="chunked-buffered-8k"),
        pytest.param("", 100_000, [1, 2, 2], id="chunked-buffered-large"),
        pytest.param("length=1", 200, [2, 2, 2], id="length-buffered-small"),
        pytest.param("length=1", 8000, [1, 2, 2], id="length-buffered-8k"),
    ],
)
async def test_nginx_streamed_responses(
    nginx_cdn: NginxFactory, origin: Origin, query: str, size: int, released_by: list[int]
) -> None:
    """What proxy_buffering on does to a response written in pieces GAP seconds apart.

    With X-Accel-Buffering: no every write reaches the client at once. Without it
    nginx passes on each full 4 KiB buffer at once but holds the partly filled last
    one until the origin writes again or ends the response; a small chunked write
    passes at once, a small write in a Content-Length response waits for the end.
    """
    base = nginx_cdn(origin.port)
    stream = await streamed(origin, base, size, query)
    assert stream.released_by() == released_by
    streams_at_least_partly = stream.arrivals[0][0] < stream.writes[1]
    assert streams_at_least_partly == (released_by[0] < 2)


# --- nginx: requests per second on one keep-alive connection ----------------------------


async def post_rate(url: str, body: bytes, count: int) -> float:
    """Sequential POSTs on one kept-alive aiohttp connection: requests per second."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post() -> None:
            async with asyncio.timeout(5), http.post(url, data=body) as response:
                await response.read()
                assert response.status == 200

        await post()  # connect (and let nginx connect to the origin) first
        start = time.perf_counter()
        for _ in range(count):
            await post()
        return count / (time.perf_counter() - start)


async def best_rate(url: str, body: bytes, count: int = 40, tries: int = 3) -> float:
    """The best of a few runs: a noisy machine only ever makes a run slower."""
    return max([await post_rate(url, body, count) for _ in range(tries)])


@pytest.mark.parametrize("size", [1000, 16 << 10, 64 << 10])
async def test_nginx_keeps_up_with_posts_on_one_connection(
    nginx_cdn: NginxFactory, origin: Origin, size: int
) -> None:
    body = os.urandom(size)
    direct = await best_rate(origin.url("/small"), body)
    via_nginx = await best_rate(nginx_cdn(origin.port) + "/small", body)
    assert via_nginx >= 200, f"{via_nginx:.0f}/s via nginx, {direct:.0f}/s direct"
    assert via_nginx >= direct / 10, f"{via_nginx:.0f}/s via nginx, {direct:.0f}/s direct"


@pytest.mark.parametrize(
    ("location_extra", "quickack", "stalls"),
    [
        pytest.param(NGINX_WITHOUT_FIX, False, True, id="stock-nginx-stalls"),
        pytest.param("client_body_buffer_size 8k;", False, False, id="fix-sendfile-nopush"),
        pytest.param("sendfile off;", False, False, id="fix-body-buffer-2m"),
        pytest.param(NGINX_WITHOUT_FIX, True, False, id="fix-origin-quickack"),
    ],
)
async def test_the_40ms_stall_and_each_fix(
    nginx_cdn: NginxFactory, location_extra: str, quickack: bool, stalls: bool
) -> None:
    """A body spooled to a file reaches the origin in two writes; Nagle holds the second
    until the origin's delayed ACK (40 ms) on the kept-alive upstream connection."""
    body = os.urandom(16 << 10)
    async with Origin(quickack=quickack).running() as origin:
        base = nginx_cdn(origin.port, location_extra=location_extra)
        direct = await best_rate(origin.url("/small"), body, tries=1)
        rate = await post_rate(base + "/small", body, count=25)
        if not stalls:
            rate = max(rate, await best_rate(base + "/small", body, tries=2))
    if stalls:
        assert rate < 35, f"{rate:.0f}/s: no 40 ms stall"
        assert rate < direct / 10
    else:
        assert rate >= 200, f"{rate:.0f}/s via nginx, {direct:.0f}/s direct"


# --- FaultRelay ---------------------------------------------------------------------------


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]


@dataclass
class Outcome:
    ok: bool
    intact: bool = False


async def post_through(
    http: aiohttp.ClientSession, url: str, body: bytes, *, chunked: bool
) -> Outcome:
    """POST ``body`` to /echo, both ways chunked or with Content-Length: echoed intact?"""
    data = chunks_of(body) if chunked else body
    if chunked:
        url += "?chunked=1"
    try:
        async with asyncio.timeout(5), http.post(url, data=data) as response:
            echoed = await response.read()
    except (aiohttp.ClientError, ConnectionError):
        return Outcome(ok=False)
    intact = echoed == body and response.headers["X-Body-SHA256"] == sha(body)
    return Outcome(ok=True, intact=intact)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("direction", ["request", "response"])
async def test_fault_relay_resets_every_nth_body(
    origin: Origin, fault_relay: FaultRelayFactory, direction: Direction, chunked: bool
) -> None:
    every, count = 3, 9
    bodies = [os.urandom(100_000 + i) for i in range(count)]
    relay = await fault_relay(origin.port, direction=direction, every=every)
    async with aiohttp.ClientSession() as http:
        outcomes = [
            await post_through(http, f"{relay.url}/echo", body, chunked=chunked) for body in bodies
        ]
    cut = [i % every == every - 1 for i in range(count)]
    assert [not outcome.ok for outcome in outcomes] == cut
    assert all(outcome.intact for outcome in outcomes if outcome.ok)
    assert [record.cut for record in relay.records] == cut
    assert relay.resets == count // every
    # keep-alive: each connection carried requests until one was cut
    assert relay.connections == count // every
    if direction == "request":  # the origin got half a body, then the reset
        partial = [got for got, body, c in zip(origin.received, bodies, cut, strict=True) if c]
        assert all(0 < got < 100_000 for got in partial), partial


async def read_to_end(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(5):
        while await reader.read(1 << 16):
            pass


async def test_fault_relay_resets_with_rst_mid_response(
    origin: Origin, fault_relay: FaultRelayFactory
) -> None:
    relay = await fault_relay(origin.port, direction="response", every=1)
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    body = os.urandom(50_000)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + body)
    with pytest.raises(ConnectionResetError):  # RST, not FIN: a read fails
        await read_to_end(reader)
    writer.close()
    assert relay.resets == 1
    assert origin.received == [50_000]


async def test_fault_relay_passes_everything_when_every_is_zero(
    origin: Origin, fault_relay: FaultRelayFactory
) -> None:
    bodies = [os.urandom(size) for size in (0, 1, 70_000, 300_000)]
    relay = await fault_relay(origin.port, every=0)
    async with aiohttp.ClientSession() as http:
        for chunked in (False, True):
            for body in bodies:
                outcome = await post_through(http, f"{relay.url}/echo", body, chunked=chunked)
                assert outcome.intact
    assert relay.resets == 0
    assert relay.connections == 1
    assert origin.received == [len(body) for body in bodies] * 2


async def test_fault_relay_follows_pipelined_and_unusual_messages(
    origin: Origin, fault_relay: FaultRelayFactory
) -> None:
    """One write, four requests: a chunked body with an extension and a trailer, a HEAD
    (its 405 answer has a Content-Length but no body), an Expect: 100-continue (an
    interim 100 before the answer), then a large one. Only the framing tells the relay
    that the third response body is the fourth response's, and cuts that."""
    big = os.urandom(300_000)
    requests = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
        b"0123456789",
        b"POST /echo?chunked=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + big,
    ]
    relay = await fault_relay(origin.port, direction="response", every=3)
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"".join(requests))
    with pytest.raises(ConnectionResetError):
        await read_to_end(reader)
    writer.close()
    assert [(record.length, record.cut) for record in relay.records] == [
        (5, False),  # "hello"
        (10, False),  # "0123456789", after a 405 without a body and a 100 Continue
        (None, True),  # the large one, chunked
    ]
    assert origin.received == [5, 10, 300_000]
    assert relay.connections == 1
