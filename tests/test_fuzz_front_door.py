"""Fuzzing the front door: whatever a stranger writes, the server answers in HTTP or hangs up.

A real flyway server (every installed transport, the default fallback) runs on 127.0.0.1 in a
thread with its own event loop. Hypothesis writes raw bytes to fresh TCP connections: random
bytes, and damaged copies of valid requests (request lines, headers, chunked bodies, WebSocket
upgrades carrying forged or captured hellos, POSTs carrying envelopes). Every genuine hello and
envelope used here was "captured": the server saw it once before the fuzz began, so everything
the fuzz sends is a stranger's. Each connection must get well-formed HTTP responses or a
close, within a short deadline once the stranger stops writing; no response is a 500 (an
exception escaping a handler) or a 101 (a stranger let in); nothing is logged with a
traceback, and the loop reports no unhandled exception ("Task exception was never
retrieved" included). After each batch the server still serves its page, and afterwards a
real tunnel, over every transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flyway_core import Settings
from flyway_core.address import Address, ServerURL
from flyway_core.events import Event
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import EchoServer, forwarding, hashed_exchange, serving
from flyway_core.testing.mutations import mutations_of

envelope = pytest.importorskip("flyway_http_post.envelope")

PASSWORD = "front door fuzz"
QUIET = 0.1  # seconds of silence after which the stranger stops writing (half-closes)
DEADLINE = 3.0  # seconds the server then has to finish answering and hang up
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # examples are cheap to find again; a stale database only slows the batch
)

# --- the server, in a thread of its own ----------------------------------------------------


@dataclass
class Door:
    """A running server, what its loop and loggers reported, and the captured credentials."""

    address: Address
    loop: asyncio.AbstractEventLoop
    server: Any
    events: list[Event]
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function(*args)`` on the server's loop and return its result."""

        async def run() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def settle(self) -> None:
        """Let the loop finish what the last connection started (two passes through it)."""
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.005), self.loop).result(5)


class _Recorder(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record)


@pytest.fixture(scope="module")
def door() -> Iterator[Door]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        stop.append(asyncio.Event())
        events: list[Event] = []
        async with serving(Settings(password=PASSWORD), events) as (server, address):
            ready["door"] = Door(address, loop, server, events, errors)
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="fuzzed door", daemon=True)
    thread.start()
    assert started.wait(10), "the server did not start"
    the_door: Door = ready["door"]
    recorder = _Recorder(the_door.records)
    logging.getLogger().addHandler(recorder)
    try:
        yield the_door
    finally:
        logging.getLogger().removeHandler(recorder)
        the_door.loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)


# --- what a stranger may see ---------------------------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_responses(data: bytes) -> list[int]:
    """Return the statuses of the HTTP/1.x responses ``data`` consists of; fail on anything else.

    A body is delimited by Content-Length, by chunked encoding, or by the close; a 101 ends
    HTTP on the connection. Responses cut short fail, as do bytes that start no response.
    """
    statuses: list[int] = []
    position = 0
    while position < len(data):
        end = data.find(b"\r\n\r\n", position)
        assert end >= 0, f"a response head cut short: {data[position:][:200]!r}"
        status_line, *lines = data[position:end].split(b"\r\n")
        match = _STATUS.fullmatch(status_line)
        assert match, f"not a status line: {status_line[:200]!r}"
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and _TOKEN.fullmatch(name), f"not a header line: {line[:200]!r}"
            headers.setdefault(name.lower(), []).append(value.strip())
        status = int(match[1])
        statuses.append(status)
        position = end + 4
        if status == 101:
            break  # what follows is the WebSocket's
        if 100 <= status < 200 or status in (204, 304):
            continue
        if b"chunked" in b",".join(headers.get(b"transfer-encoding", [])).lower():
            position = _skip_chunks(data, position)
        elif b"content-length" in headers:
            (length,) = set(headers[b"content-length"])
            assert length.isdigit(), f"Content-Length {length!r}"
            position += int(length)
            assert position <= len(data), "a response body cut short"
        else:
            position = len(data)  # delimited by the close
    return statuses


def _skip_chunks(data: bytes, position: int) -> int:
    while True:
        end = data.find(b"\r\n", position)
        assert end >= 0, "a chunk size line cut short"
        size = int(data[position:end].split(b";")[0], 16)
        position = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", position - 2)
            assert trailer_end >= 0, "chunked trailers cut short"
            return trailer_end + 4
        position += size + 2
        assert position <= len(data), "a chunk cut short"


def _traceback_or_unhandled(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return (
        record.exc_info is not None
        or "Traceback" in message
        or "never retrieved" in message
        or "was destroyed but it is pending" in message
    )


def exchange(door: Door, data: bytes) -> list[int]:
    """Write ``data`` as a stranger; return the answer's statuses once the server hangs up."""
    logged, loop_errors = len(door.records), len(door.loop_errors)
    received = bytearray()
    with socket.create_connection((door.address.host, door.address.port), timeout=DEADLINE) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)  # the server may hang up before it has read everything
        s.settimeout(QUIET)
        half_closed = False
        deadline = time.monotonic() + QUIET + DEADLINE
        while True:
            try:
                chunk = s.recv(1 << 16)
            except TimeoutError:
                if half_closed:
                    raise AssertionError(
                        f"no answer and no close {DEADLINE} s after the stranger stopped"
                    ) from None
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_WR)  # nothing more comes: the server must finish
                half_closed = True
                s.settimeout(DEADLINE)
                continue
            except ConnectionResetError:
                break  # a reset is a close
            if not chunk:
                break
            received += chunk
            assert time.monotonic() < deadline, "the answer goes on and on"
    door.settle()
    statuses = parse_responses(bytes(received))
    assert 500 not in statuses, "a 500: an exception escaped a request handler"
    assert 101 not in statuses, "a stranger's upgrade was accepted"
    bad = [r for r in door.records[logged:] if _traceback_or_unhandled(r)]
    assert not bad, [f"{r.name}: {r.getMessage()} {r.exc_info!r}" for r in bad]
    assert door.loop_errors[loop_errors:] == []
    return statuses


def fuzz_exchange(door: Door, data: bytes) -> None:
    """``exchange``, noting what kind of answer came in hypothesis's statistics."""
    statuses = exchange(door, data)
    event(f"answers {sorted(set(statuses))}" if statuses else "closed without an answer")


def assert_still_serving(door: Door) -> None:
    statuses = exchange(door, b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert len(statuses) == 1 and statuses[0] in (200, 404)  # the fallback's page, as before
    gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
    door.settle()
    assert door.loop_errors == []
    assert not [r for r in door.records if _traceback_or_unhandled(r)]


# --- captured credentials: genuine, then seen by the server once ---------------------------

MASTER = derive_master_key(PASSWORD)
KEYS = envelope.EnvelopeKeys(MASTER)


def _captured(door: Door) -> tuple[list[bytes], list[bytes]]:
    """Make hellos and envelopes, and let the server see each once, as a recorded session."""
    hellos = [ClientConnection(MASTER, now=time.time()).hello() for _ in range(3)]
    for hello in hellos:
        connection = door.call(door.server.accept, hello, "the genuine client")
        assert connection is not None  # accepted once; from now on it is a replay
    session = envelope.new_session_id()
    kinds = envelope.Kind
    bodies = [
        KEYS.seal_request(envelope.Request(kinds.OPEN, session), hellos[0]),
        KEYS.seal_request(envelope.Request(kinds.SEND, session, up_offset=0), b"records" * 9),
        KEYS.seal_request(envelope.Request(kinds.POLL, session, down_ack=0)),
        KEYS.seal_request(envelope.Request(kinds.CLOSE, session)),
        KEYS.seal_request(envelope.Request(kinds.PING, session, up_offset=0), padding=30),
    ]
    return hellos, bodies


@pytest.fixture(scope="module")
def captured(door: Door) -> tuple[list[bytes], list[bytes]]:
    return _captured(door)


# --- strategies: requests as a client, a scanner or a fool would write them ----------------

METHODS = [b"GET", b"POST", b"PUT", b"OPTIONS", b"DELETE"]
ODD_METHODS = [b"CONNECT", b"PRI", b"TRACE", b"get", b"G T", b""]
TARGETS = [b"/", b"/index.html", b"/some/page?q=1&r=%00", b"http://example.com/"]
ODD_TARGETS = [b"*", b"example.com:443", b"//..//../etc/passwd", b"/" + b"a" * 9000, b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0"]
ODD_VERSIONS = [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1.1x", b"HTTP/1.1 extra", b""]
HEADERS = [
    b"Host: example.com",
    b"User-Agent: Mozilla/5.0",
    b"Accept: */*",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Content-Type: application/octet-stream",
    b"Expect: 100-continue",
]
ODD_HEADERS = [
    b"Upgrade: h2c",
    b"Sec-WebSocket-Version: 8",
    b"Content-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: identity",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 5, 6",
    b"Cookie: sid=",
    b"Cookie: sid=%%%; other=1",
    b"NoColonHere",
    b" folded continuation",
    b"Bad Name: value",
    b": empty name",
    b"X-Nul: a\x00b",
    b"X-Latin: \xff\xfe",
    b"X-Long: " + b"v" * 9000,
]


def _usually(common: list[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``common`` three times in four, else one of ``odd``."""
    return st.integers(0, 3).flatmap(lambda roll: st.sampled_from(odd if roll == 0 else common))


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunked encoding, sometimes with sizes, extensions or the end garbled."""
    sizes = draw(st.lists(st.integers(1, 64), max_size=6))
    out, position = bytearray(), 0
    for size in sizes:
        piece = body[position : position + size]
        position += size
        if not piece:
            break
        size_text = draw(
            st.sampled_from([b"%x" % len(piece), b"%X;ext=1" % len(piece), b"zz", b"-1", b""])
        )
        out += size_text + b"\r\n" + piece + b"\r\n"
    out += draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"0\r\n", b""]))
    return bytes(out)


@st.composite
def requests(
    draw: st.DrawFn, cookies: st.SearchStrategy[bytes], bodies: st.SearchStrategy[bytes]
) -> bytes:
    method = draw(_usually(METHODS, ODD_METHODS))
    target = draw(_usually(TARGETS, ODD_TARGETS))
    line = b" ".join([method, target, draw(_usually(VERSIONS, ODD_VERSIONS))])
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=6))
    if draw(st.integers(0, 3)) == 0:
        headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(ODD_HEADERS)))
    if draw(st.booleans()):
        headers.append(b"Cookie: sid=" + draw(cookies))
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "chunked", "none", "short", "long"]))
    if framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked(body))
    elif framing != "none":
        declared = {"length": 0, "short": -1, "long": 7}[framing] + len(body)
        headers.append(b"Content-Length: %d" % max(declared, 0))
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def cookie_values(hellos: list[bytes]) -> st.SearchStrategy[bytes]:
    """What a stranger puts in the hello cookie: captured hellos, damaged, extended, forged."""
    other = [ClientConnection(derive_master_key("not the password"), now=time.time()).hello()]
    return st.one_of(
        st.sampled_from(hellos).map(_b64),
        mutations_of(hellos).map(_b64),
        st.sampled_from(hellos).map(lambda h: _b64(h + os.urandom(40))),  # hello, then garbage
        mutations_of(hellos).map(_b64).flatmap(lambda token: mutations_of(token, max_edits=2)),
        st.just(_b64(other[0])),
        st.binary(max_size=120).map(_b64),
        st.binary(max_size=60),
    )


def envelope_bodies(bodies: list[bytes]) -> st.SearchStrategy[bytes]:
    """POST bodies that look like envelopes: captured ones replayed or damaged, forgeries."""
    return st.one_of(
        st.sampled_from(bodies),
        mutations_of(bodies),
        st.binary(min_size=60, max_size=200),
        st.builds(
            lambda kind, payload: envelope.EnvelopeKeys(b"x" * 32).seal_request(
                envelope.Request(kind, bytes(16)), payload
            ),
            st.sampled_from(list(envelope.Kind)),
            st.binary(max_size=64),
        ),
    )


def _upgrade(cookie: bytes) -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Cookie: sid=" + cookie + b"\r\n\r\n"
    )


def _post(body: bytes) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


# --- the fuzz ------------------------------------------------------------------------------


@settings(FUZZ, max_examples=40)
@given(data=st.binary(max_size=2000))
def _random_bytes(door: Door, data: bytes) -> None:
    fuzz_exchange(door, data)


def test_random_bytes_get_http_or_a_close(door: Door) -> None:
    _random_bytes(door)
    assert_still_serving(door)


def test_damaged_and_pipelined_requests_get_http_or_a_close(
    door: Door, captured: tuple[list[bytes], list[bytes]]
) -> None:
    hellos, bodies = captured
    one = requests(cookie_values(hellos), st.binary(max_size=80) | envelope_bodies(bodies))

    @settings(FUZZ, max_examples=100)
    @given(
        st.lists(one, min_size=1, max_size=3)
        .map(b"".join)
        .flatmap(lambda request: st.just(request) | mutations_of(request))
    )
    def check(data: bytes) -> None:
        fuzz_exchange(door, data)

    check()
    assert_still_serving(door)


def test_upgrades_with_captured_damaged_or_forged_hellos_get_http_or_a_close(
    door: Door, captured: tuple[list[bytes], list[bytes]]
) -> None:
    hellos, _ = captured

    @settings(FUZZ, max_examples=50)
    @given(cookie_values(hellos).map(_upgrade).flatmap(lambda r: st.just(r) | mutations_of(r)))
    def check(data: bytes) -> None:
        fuzz_exchange(door, data)

    check()
    assert_still_serving(door)


def test_posts_of_captured_damaged_or_forged_envelopes_get_http_or_a_close(
    door: Door, captured: tuple[list[bytes], list[bytes]]
) -> None:
    _, bodies = captured

    @settings(FUZZ, max_examples=50)
    @given(envelope_bodies(bodies).map(_post).flatmap(lambda r: st.just(r) | mutations_of(r)))
    def check(data: bytes) -> None:
        fuzz_exchange(door, data)

    check()
    assert_still_serving(door)


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_after_the_fuzz_a_tunnel_still_carries_bytes(door: Door, transport: str) -> None:
    async def tunnel() -> tuple[str, str]:
        async with EchoServer() as echo:
            url = ServerURL("http", door.address.host, door.address.port)
            settings_ = Settings(password=PASSWORD)
            async with forwarding(url, transport, settings_, [echo], []) as (_, ports):
                async with asyncio.timeout(20):
                    sent, echoed, *_ = await hashed_exchange(ports[echo], 256 << 10)
        return sent, echoed

    sent, echoed = asyncio.run(tunnel())
    assert sent == echoed
    assert_still_serving(door)
