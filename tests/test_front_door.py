"""The front door without the password: no inflating, deadlines, a cap, and quiet logs.

Real flyway servers on 127.0.0.1 (in-process, and the ``flyway`` command for
what lands on stderr), raw sockets, deadlines shortened in ``Settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import time
import zlib

import pytest
from flyway_procs import flyway
from rich.console import Console

from flyway_core import Address, Settings
from flyway_core.console import ConsoleReporter
from flyway_core.events import Event, NotTunnelTraffic, TunnelRejected
from flyway_core.frontdoor_guard import DoorProtocol
from flyway_core.frontdoor_pages import SERVER, page_body
from flyway_core.settings import FrontDoorLimits
from flyway_core.testing import free_port, hashed_exchange, run_pair, serving, wait_port
from flyway_core.testing.probes import PROBES

SHORT = FrontDoorLimits(header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.8)
HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _bomb(mib: int) -> bytes:
    """A gzip body of ``mib`` MiB of zeros: about a thousandth of that on the wire."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(deflate.compress(zeros) for _ in range(mib)) + deflate.flush()


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Read and drop until EOF; return how long it took (TimeoutError after ``limit``)."""
    start = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(1 << 16):
            pass
    return time.monotonic() - start


async def _ask(port: int, data: bytes = HEAD) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        line = await reader.readline()
        await reader.readuntil(b"\r\n\r\n")
    return line


# --- 3. no decompression -------------------------------------------------------------------


async def test_a_gzip_bomb_is_answered_at_once_and_never_inflated() -> None:
    body = _bomb(256)  # 256 MiB inflated; aiohttp's default took 0.65 s to answer it here
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    async with serving(Settings(password="pw"), []) as (_, bound):
        reader, writer = await _ask(bound.port, request)
        start = time.monotonic()
        line = await _status(reader)
        seconds = time.monotonic() - start
        writer.close()
    assert line == b"HTTP/1.1 404 Not Found\r\n"
    assert seconds < 0.3


async def test_a_body_that_is_not_gzip_at_all_still_gets_the_404_page() -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n"
    async with serving(Settings(password="pw"), []) as (_, bound):
        reader, writer = await _ask(bound.port, request + b"oops")
        assert await _status(reader) == b"HTTP/1.1 404 Not Found\r\n"  # aiohttp: 400, its text
        writer.close()


# --- 7. deadlines and the cap --------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\nab",
    ],
    ids=["nothing", "half a head", "a stalled body"],
)
async def test_a_slow_client_is_dropped_at_its_deadline(sent: bytes) -> None:
    events: list[Event] = []
    async with serving(Settings(password="pw", front_door=SHORT), events) as (server, bound):
        reader, writer = await _ask(bound.port, sent)
        seconds = await _closed_after(reader, 3)
        writer.close()
        assert server.guard is not None and server.guard.dropped == 1
    assert 0.4 < seconds < 1.5  # 0.5 s, swept every 0.125 s
    (reported,) = [e for e in events if isinstance(e, NotTunnelTraffic)]  # once, not twice
    assert "timed out" in reported.reason


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n" + b"\x07" * 300, "POST /"),
    ],
    ids=["no handler claims it", "the HTTP POST handler read its body and declined it"],
)
async def test_a_request_the_site_answers_is_reported_once_as_not_tunnel_traffic(
    sent: bytes, reason: str
) -> None:
    events: list[Event] = []
    async with serving(Settings(password="pw"), events) as (_, bound):
        reader, writer = await _ask(bound.port, sent)
        assert (await _status(reader)).startswith(b"HTTP/1.1 404")
        writer.close()
    reported = [e.reason for e in events if isinstance(e, NotTunnelTraffic)]
    assert reported == [reason]


async def test_a_slow_but_steady_body_is_not_dropped() -> None:
    async with serving(Settings(password="pw", front_door=SHORT), []) as (server, bound):
        reader, writer = await _ask(
            bound.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"
        )
        for _ in range(6):  # 1.8 s in all, 0.3 s between bytes
            await asyncio.sleep(0.3)
            writer.write(b"x")
        assert await _status(reader) == b"HTTP/1.1 404 Not Found\r\n"
        writer.close()
        assert server.guard is not None and server.guard.dropped == 0


async def test_an_idle_kept_alive_connection_closes_after_the_keepalive_timeout() -> None:
    async with serving(Settings(password="pw", front_door=SHORT), []) as (_, bound):
        reader, writer = await _ask(bound.port)
        assert await _status(reader) == b"HTTP/1.1 404 Not Found\r\n"
        seconds = await _closed_after(reader, 3)
        writer.close()
    assert 0.6 < seconds < 2.0  # keepalive_timeout 0.8 s


def test_the_deadlines_are_set_on_the_command_line() -> None:
    port = free_port()
    args = ["--header-timeout", "0.5", "--body-timeout", "0.5", "--max-connections", "64"]
    with flyway([f"127.0.0.1:{port}", "-p", "a long enough password", *args]):
        wait_port(port)

        async def silent() -> float:
            reader, writer = await _ask(port, b"")
            try:
                return await _closed_after(reader, 5)
            finally:
                writer.close()

        assert asyncio.run(silent()) < 1.5


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_long_polls_and_sessions_outlive_the_request_deadlines(
    echo_server: Address, transport: str
) -> None:
    settings = Settings(password="pw", front_door=SHORT)
    async with run_pair([echo_server], transport=transport, server_settings=settings) as pair:
        await asyncio.sleep(2.0)  # four deadlines of idle tunnel: polls are held, not read
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed
        assert pair.server.guard is not None and pair.server.guard.dropped == 0


async def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    door = FrontDoorLimits(max_connections=4)
    async with serving(Settings(password="pw", front_door=door), []) as (server, bound):
        kept = [await _ask(bound.port) for _ in range(4)]
        for reader, _ in kept:
            await _status(reader)  # now all four are idle, kept alive
            await asyncio.sleep(0.02)
        reader, writer = await _ask(bound.port)
        assert await _status(reader) == b"HTTP/1.1 404 Not Found\r\n"
        assert await _closed_after(kept[0][0], 2) < 2  # the oldest made room
        assert server.guard is not None and len(server.guard.connections) == 4
        for _, w in [*kept, (reader, writer)]:
            w.close()


async def test_at_the_cap_slow_heads_make_room_for_a_visitor() -> None:
    door = FrontDoorLimits(max_connections=8)
    async with serving(Settings(password="pw", front_door=door), []) as (server, bound):
        slow = [await _ask(bound.port, b"GET / HTTP/1.1\r\n") for _ in range(20)]
        reader, writer = await _ask(bound.port)
        assert await _status(reader) == b"HTTP/1.1 404 Not Found\r\n"
        assert server.guard is not None and server.guard.dropped >= 13
        for _, w in [*slow, (reader, writer)]:
            w.close()


def test_the_guard_reads_what_it_needs_of_aiohttp() -> None:
    """The few internals of aiohttp's RequestHandler the guard reads are still there."""
    names = {"_request_count", "_messages", "_payload_parser", "_reading_paused"}
    names |= {"_buffer_paused", "_request_in_progress", "_message_tail", "_manager"}
    names |= {"_keepalive_handle"}
    slots = {s for cls in DoorProtocol.__mro__ for s in getattr(cls, "__slots__", ())}
    assert names <= slots


# --- 8. logs ------------------------------------------------------------------------------


def _reporter(verbosity: int) -> tuple[ConsoleReporter, io.StringIO]:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=200))
    reporter.verbosity = verbosity
    return reporter, out


def test_two_hundred_rejections_make_one_summary_line() -> None:
    reporter, out = _reporter(0)
    for i in range(200):
        reporter.on_event(NotTunnelTraffic(f"10.0.0.{i % 250}", "GET /"))
        if i % 4 == 0:
            reporter.on_event(TunnelRejected("10.0.0.1", "bad hello"))
    assert out.getvalue() == ""
    reporter.summarise()
    reporter.summarise()  # nothing new: nothing printed
    (line,) = out.getvalue().splitlines()
    assert "200 requests were not tunnel traffic, 50 with a bad hello" in line


def test_each_request_gets_a_line_only_with_vv() -> None:
    reporter, out = _reporter(2)
    for _ in range(20):
        reporter.on_event(NotTunnelTraffic("10.0.0.1", "GET /"))
    assert len(out.getvalue().splitlines()) == 20
    quiet, out = _reporter(-1)
    for _ in range(20):
        quiet.on_event(NotTunnelTraffic("10.0.0.1", "GET /"))
    quiet.summarise()
    assert out.getvalue() == ""


async def test_the_summary_comes_once_an_interval() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=200), summary_interval=0.2)
    async with reporter._running():
        reporter.on_event(NotTunnelTraffic("10.0.0.1", "GET /"))
        await asyncio.sleep(0.35)
        assert len(out.getvalue().splitlines()) == 1
        reporter.on_event(NotTunnelTraffic("10.0.0.1", "GET /"))
    assert len(out.getvalue().splitlines()) == 2  # the rest when it stops


async def _abusive_requests(port: int, count: int) -> None:
    """Bad requests of every kind from the corpus, and bodies cut off half way."""
    probes = [p.data for p in PROBES if p.data]
    probes.append(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nhalf")
    for i in range(count):
        reader, writer = await _ask(port, probes[i % len(probes)])
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.05):
                await reader.read(1 << 16)
        writer.transport.abort()  # cut off, answered or not


def test_a_burst_of_bad_requests_is_one_line_on_stderr_and_no_traceback() -> None:
    port = free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "a long enough password"]) as server:
        wait_port(port)
        asyncio.run(_abusive_requests(port, 200))
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=10)
    assert "Traceback" not in err and "Error handling request" not in err
    summaries = [line for line in err.splitlines() if "not tunnel traffic" in line]
    assert len(summaries) == 1, err
    lines = [
        line for line in err.splitlines() if line.strip() and not line.startswith(("╭", "│", "╰"))
    ]
    assert lines == summaries, err


def test_no_page_names_what_serves_it() -> None:
    for status in (400, 404, 405, 413, 414, 494, 500, 505):
        assert b"aiohttp" not in page_body(status) and SERVER.encode() in page_body(status)
