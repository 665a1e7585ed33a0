"""The server side: one ``HttpSession`` per tunnel session, fed by ordinary POST requests.

Theory of operation. Uplink bytes arrive in SEND requests at an offset; the
session delivers them in order, keeps early ones until the gap fills, and drops
what it already has, so retried and reordered requests are harmless. Downlink
bytes wait in ``_down`` until a POLL acknowledges them; a POLL is answered as
soon as there are unsent bytes (or empty after the poll timeout), either whole
or, when the client asks, streamed envelope by envelope. A POLL that says a
response was lost (REWIND) makes everything unacknowledged go out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from flyway_core import CarrierClosed
from flyway_core.interfaces import Carrier
from flyway_http_post.envelope import (
    MAX_HOLD_MS,
    EnvelopeKeys,
    Kind,
    PingInfo,
    Request,
    RequestFlags,
    Response,
    Status,
)
from flyway_http_post.limits import PROBE_SECONDS, Limits
from flyway_http_post.offsets import Outbox, Reassembly

if TYPE_CHECKING:
    from flyway_core.interfaces import FrontDoor
    from flyway_core.protocol import ServerConnection

__all__ = ["HttpPostServer", "HttpSession"]

log = logging.getLogger(__name__)

PROBE_PADDING = 24 << 10  # the first probe envelope is about this big
STREAM_SECONDS = 20.0  # a streamed response ends after this long...
STREAM_BYTES = 4 << 20  # ...or this many bytes, so acknowledgements keep coming
DOWN_LIMIT = 8 << 20  # unacknowledged downlink bytes before the session's writer waits
UP_REORDER_LIMIT = 16 << 20  # how far ahead of the gap an uplink offset may be (twice
# what a client keeps unacknowledged), which bounds the early bytes a session holds


def _padding() -> int:
    return random.randrange(0, 256)


def _headers(streamed: bool) -> dict[str, str]:
    headers = {
        "Content-Type": "application/octet-stream",
        "Cache-Control": "no-store",
        "Server": "nginx",
    }
    if streamed:
        headers["X-Accel-Buffering"] = "no"
    return headers


class HttpSession(Carrier):
    """Server-side state of one tunnel session, and its Carrier for the core."""

    keepalive = False  # polls show the client is alive (the reaper ends a silent one)

    def __init__(self, session_id: bytes, peer: str) -> None:
        self.id = session_id
        self.peer = peer
        self.last_seen = time.monotonic()
        self.closed = False
        self.polls = 0
        # uplink: slices in any order and any number of times, in order out
        self._up = Reassembly(UP_REORDER_LIMIT)
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        # downlink: kept until a poll acknowledges it; _sent is how far we sent
        self._down = Outbox(DOWN_LIMIT)
        self._sent = 0
        self._changed = asyncio.Event()

    # --- Carrier, as the core session sees it ---------------------------------------

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise CarrierClosed("the HTTP session is closed")
        self._down.append(data)
        self._changed.set()
        await self._down.wait_room()

    async def receive(self) -> bytes:
        if self.closed and self._inbox.empty():
            return b""
        return await self._inbox.get()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._inbox.put_nowait(b"")
            self._changed.set()
            self._down.close()

    # --- fed by requests ------------------------------------------------------------

    def deliver(self, offset: int, data: bytes) -> bool:
        """Take uplink bytes at ``offset``; False if they are absurdly far ahead."""
        self.last_seen = time.monotonic()
        ready = self._up.add(offset, data)
        if ready is None:
            return False
        for chunk in ready:
            self._inbox.put_nowait(chunk)
        return True

    @property
    def unacknowledged(self) -> int:
        """Downlink bytes held for the client (sent or not, not yet acknowledged)."""
        return len(self._down)

    @property
    def up_ack(self) -> int:
        return self._up.next

    def acknowledge(self, down_ack: int, rewind: bool) -> None:
        """Forget downlink bytes the client has; on REWIND resend the rest."""
        self.last_seen = time.monotonic()
        self._down.acknowledge(down_ack)
        self._sent = max(self._sent, self._down.base)
        if rewind:
            self._sent = self._down.base

    def unsend(self, offset: int) -> None:
        """Bytes from ``offset`` on did not go out after all: send them again."""
        self._sent = max(min(self._sent, offset), self._down.base)

    def take(self, limit: int) -> tuple[int, bytes]:
        """Return (offset, bytes) not yet sent, at most ``limit`` of them."""
        chunk = self._down.slice(self._sent, self._sent + limit)
        offset = self._sent
        self._sent += len(chunk)
        return offset, chunk

    @property
    def has_unsent(self) -> bool:
        return self._sent < self._down.end

    async def wait_unsent(self, seconds: float) -> bool:
        """Wait until there is something to send (True) or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while not self.has_unsent and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return self.has_unsent


class HttpPostServer:
    """Claims POST requests whose body opens as an envelope; everything else passes."""

    def __init__(self, door: FrontDoor, keys: EnvelopeKeys, limits: Limits) -> None:
        self.door = door
        self.keys = keys
        self.limits = limits
        self.sessions: dict[bytes, HttpSession] = {}
        self.requests = 0  # tunnel requests answered (for statistics and tests)
        self._tasks: asyncio.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            reaper = tasks.create_task(self._reap())
            try:
                yield
            finally:
                reaper.cancel()
                for session in list(self.sessions.values()):
                    await session.close()

    async def _reap(self) -> None:
        """Close sessions whose client stopped polling (it is gone)."""
        while True:
            await asyncio.sleep(self.limits.poll_timeout / 4)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                idle = now - session.last_seen
                if session.polls == 0 and idle > self.limits.dead_after:
                    log.info("http session from %s: no request for %.0fs", session.peer, idle)
                    await session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse | None:
        if request.method != "POST":
            return None
        length = request.content_length
        if length is None or length > self.limits.max_body + 4096:
            return None
        opened = self.keys.open_request(await request.read())
        if opened is None:
            return None
        envelope, payload = opened
        if envelope.kind is Kind.PING:  # flyway doctor: no session, not counted in requests
            return await self._ping(envelope, payload)
        self.requests += 1
        if envelope.kind is Kind.OPEN:
            return await self._open(request, envelope, payload)
        session = self.sessions.get(envelope.session)
        if session is None or session.closed:
            return self._reply(Response(Status.GONE))
        if envelope.kind is Kind.SEND:
            session.acknowledge(envelope.down_ack, rewind=False)
            if not session.deliver(envelope.up_offset, payload):
                await session.close()
                return self._reply(Response(Status.GONE))
            return self._reply(Response(Status.OK, up_ack=session.up_ack))
        if envelope.kind is Kind.CLOSE:
            await session.close()
            return self._reply(Response(Status.GONE))
        return await self._poll(request, session, envelope)

    async def _ping(self, envelope: Request, payload: bytes) -> web.Response:
        """Hold a PING ``up_offset`` ms, then say how much arrived and what the limits are."""
        hold = min(envelope.up_offset, MAX_HOLD_MS)
        await asyncio.sleep(hold / 1000)
        largest = self.limits.max_body + 4096  # what handle() reads at all
        info = PingInfo(self.limits.max_body, largest, self.limits.poll_timeout)
        return self._reply(Response(Status.OK, up_ack=len(payload), down_offset=hold), info.pack())

    def _reply(self, response: Response, payload: bytes = b"") -> web.Response:
        body = self.keys.seal_response(response, payload, padding=_padding())
        return web.Response(body=body, headers=_headers(False))

    async def _open(
        self, request: web.Request, envelope: Request, hello: bytes
    ) -> web.Response | None:
        peer = request.remote or "?"
        if envelope.session in self.sessions:
            return None  # a replayed OPEN: door.accept would refuse it as well
        connection = self.door.accept(hello, peer)
        if connection is None:
            return None
        session = HttpSession(envelope.session, peer)
        self.sessions[session.id] = session
        assert self._tasks is not None
        self._tasks.create_task(self._run(session, connection))
        return self._reply(Response(Status.OK))

    async def _run(self, session: HttpSession, connection: ServerConnection) -> None:
        try:
            await self.door.run_session(session, connection, peer=session.peer, transport="http")
        finally:
            await session.close()
            self.sessions.pop(session.id, None)

    async def _poll(
        self, request: web.Request, session: HttpSession, envelope: Request
    ) -> web.StreamResponse:
        session.acknowledge(envelope.down_ack, RequestFlags.REWIND in envelope.flags)
        session.polls += 1
        try:
            if envelope.flags & (RequestFlags.STREAM | RequestFlags.PROBE):
                return await self._stream(request, session, envelope)
            await session.wait_unsent(self.limits.poll_timeout)
            gone = request.transport is None or request.transport.is_closing()
            offset, chunk = session.take(0 if gone else self.limits.max_body)
            status = Status.GONE if session.closed and not chunk else Status.OK
            return self._reply(Response(status, session.up_ack, offset), chunk)
        finally:
            session.polls -= 1
            session.last_seen = time.monotonic()

    async def _stream(
        self, request: web.Request, session: HttpSession, envelope: Request
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_headers(True))
        await response.prepare(request)
        try:
            if RequestFlags.PROBE in envelope.flags:
                await self._probe(response, session)
            else:
                await self._stream_data(request, response, session)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-answer; its next poll asks for a rewind
        return response

    async def _probe(self, response: web.StreamResponse, session: HttpSession) -> None:
        """Two envelopes PROBE_SECONDS apart: buffering on the path shows as no gap.

        The first is padded to an uneven size of some kilobytes, as data would be:
        a proxy that forwards small writes at once but holds a partly filled
        buffer (nginx with proxy_buffering on) must not pass for a streaming path.
        """
        offset, _ = session.take(0)
        padding = PROBE_PADDING + random.randrange(1024)
        await response.write(
            self.keys.seal_response(Response(Status.OK, session.up_ack, offset), padding=padding)
        )
        await asyncio.sleep(PROBE_SECONDS)
        await response.write(self._envelope(session, *session.take(0)))

    async def _stream_data(
        self, request: web.Request, response: web.StreamResponse, session: HttpSession
    ) -> None:
        """Envelopes as data comes, until the poll timeout or STREAM_BYTES."""
        deadline = time.monotonic() + min(STREAM_SECONDS, self.limits.poll_timeout)
        transport = request.transport
        sent = 0
        first = True  # the first envelope goes out at once, even empty
        while sent < STREAM_BYTES and not session.closed:
            if not first:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await session.wait_unsent(remaining):
                    return
            first = False
            if transport is None or transport.is_closing():
                return  # the client (or a proxy on the way) hung up: leave the bytes to others
            offset, chunk = session.take(min(self.limits.max_body, STREAM_BYTES - sent))
            try:
                await response.write(self._envelope(session, offset, chunk))
            except ConnectionError:
                session.unsend(offset)  # these never left: the next poll gets them
                raise
            sent += len(chunk)

    def _envelope(self, session: HttpSession, offset: int, chunk: bytes) -> bytes:
        status = Status.GONE if session.closed and not chunk else Status.OK
        return self.keys.seal_response(
            Response(status, session.up_ack, offset), chunk, padding=_padding()
        )
