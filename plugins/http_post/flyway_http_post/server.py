"""The server side: one ``HttpSession`` per tunnel session, fed by ordinary POST requests.

Theory of operation. Uplink bytes arrive in SEND requests at an offset; the
session delivers them in order, keeps early ones until the gap fills, and drops
what it already has, so retried and reordered requests are harmless. Downlink
bytes wait in ``_down`` until a POLL acknowledges them; a POLL is answered as
soon as there are unsent bytes (or empty after the poll timeout), either whole
or, when the client asks, streamed envelope by envelope. A POLL that says a
response was lost (REWIND) makes everything unacknowledged go out again.

Only a whole, authentic and fresh envelope is tunnel traffic: every byte of the
body is sealed (``envelope.py``), each request of a session carries a number the
session takes once (``freshness.py``), and a PING carries the client's clock. Anything
else, including a replay, a request for a session this server does not know and a
body with a ``Content-Encoding``, gets exactly what an unclaimed request gets. A
sealed GONE goes only to a fresh, authentic request: one only the client can make.
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
from flyway_core.protocol import ReplayCache
from flyway_http_post.envelope import (
    ENVELOPE_OVERHEAD,
    MAX_HOLD_MS,
    REQUEST_HEAD,
    EnvelopeKeys,
    Kind,
    OpenedRequest,
    PingInfo,
    Request,
    RequestFlags,
    Response,
    ResponseFlags,
    Status,
)
from flyway_http_post.freshness import RequestWindow
from flyway_http_post.limits import PROBE_SECONDS, PROBE_WAIT, Limits
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
# what a client keeps unacknowledged)
UP_HELD_LIMIT = 8 << 20  # early uplink bytes a session holds at most, in all (a client
# has at most four bodies in flight; past this a SEND is answered RETRY)
SLACK = 4096  # the largest body read is --http-max-body plus this


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
        self.requests = RequestWindow()  # which request numbers were taken (freshness.py)
        self.probe_acked = asyncio.Event()  # the client has a probe's first envelope
        self.rewinds = 0  # REWINDs asked for so far
        # uplink: slices in any order and any number of times, in order out
        self._up = Reassembly(UP_REORDER_LIMIT, UP_HELD_LIMIT)
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
        """Take uplink bytes at ``offset``; False if not kept (too far ahead, buffer full)."""
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

    @property
    def up_held(self) -> int:
        """Early uplink bytes held until the gap before them fills."""
        return self._up.held

    @property
    def down_end(self) -> int:
        """The offset after the newest downlink byte held for the client."""
        return self._down.end

    def acknowledge(self, down_ack: int, rewind: bool) -> None:
        """Forget downlink bytes the client has; on REWIND resend the rest."""
        self.last_seen = time.monotonic()
        self._down.acknowledge(down_ack)
        self._sent = max(self._sent, self._down.base)
        if rewind:
            self._sent = self._down.base
            self.rewinds += 1  # streams in progress may be what was lost: they end
            self._changed.set()

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
        self._pings = ReplayCache()  # salts of recent PINGs, which carry a clock, not a number
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

    def _may_be_ours(self, request: web.Request) -> bool:
        """Decide from the head alone whether the body is worth reading (it is never read
        otherwise, so the fallback gets it whole)."""
        if request.method != "POST" or "Content-Encoding" in request.headers:
            return False  # our client never compresses: an encoded body is not tunnel traffic
        length = request.content_length
        return length is not None and REQUEST_HEAD < length <= self.limits.max_body + SLACK

    async def handle(self, request: web.Request) -> web.StreamResponse | None:
        """Answer a tunnel request; None, unread, for what cannot be one.

        A body that had to be read to be judged and is not ours is answered here by
        the fallback, exactly as the front door answers an unclaimed request; aiohttp
        keeps the bytes it read, so the fallback's ``request.read()`` sees them whole.
        """
        if not self._may_be_ours(request):
            return None
        opened = self.keys.open_request_whole(await request.read())
        answer = None if opened is None else await self._answer(request, opened)
        if answer is None:
            return await self.door.fallback(request)
        return answer

    async def _answer(
        self, request: web.Request, opened: OpenedRequest
    ) -> web.StreamResponse | None:
        envelope, payload = opened.request, opened.payload
        if envelope.kind is Kind.PING:  # flyway doctor: no session, not counted in requests
            reason = self._pings.check(opened.salt, envelope.time_ms / 1000, time.time())
            return None if reason else await self._ping(envelope, payload)
        if envelope.kind is Kind.OPEN:
            return await self._open(request, envelope, payload)
        session = self.sessions.get(envelope.session)
        if session is None or not session.requests.take(envelope.number):
            return None  # unknown, ended and forgotten, stale or replayed: not ours to answer
        self.requests += 1
        number = envelope.number
        if session.closed:
            return self._reply(Response(Status.GONE, number=number))
        if envelope.kind is Kind.SEND:
            session.acknowledge(envelope.down_ack, rewind=False)
            if RequestFlags.PROBE in envelope.flags:
                session.probe_acked.set()
            status = Status.OK if session.deliver(envelope.up_offset, payload) else Status.RETRY
            return self._reply(self._state(session, number, status))
        if envelope.kind is Kind.CLOSE:
            await session.close()
            return self._reply(Response(Status.GONE, number=number))
        return await self._poll(request, session, envelope)

    def _state(
        self,
        session: HttpSession,
        number: int,
        status: Status = Status.OK,
        offset: int = 0,
        flags: ResponseFlags = ResponseFlags.NONE,
    ) -> Response:
        return Response(status, session.up_ack, offset, number, session.down_end, flags)

    async def _ping(self, envelope: Request, payload: bytes) -> web.Response:
        """Hold a PING ``up_offset`` ms, then say how much arrived and what the limits are.

        With SESSION, the status says whether the session named in it is alive.
        """
        hold = min(envelope.up_offset, MAX_HOLD_MS)
        await asyncio.sleep(hold / 1000)
        largest = self.limits.max_body + SLACK  # what handle() reads at all
        info = PingInfo(self.limits.max_body, largest, self.limits.poll_timeout)
        status = Status.OK
        if RequestFlags.SESSION in envelope.flags:
            session = self.sessions.get(envelope.session)
            status = Status.OK if session is not None and not session.closed else Status.GONE
        response = Response(status, up_ack=len(payload), down_offset=hold)
        return self._reply(response, info.pack())

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
        self.requests += 1
        return self._reply(self._state(session, envelope.number))

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
            offset, chunk = session.take(0 if gone else self._payload_limit)
            status = Status.GONE if session.closed and not chunk else Status.OK
            return self._reply(self._state(session, envelope.number, status, offset), chunk)
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
                await self._probe(response, session, envelope.number)
            else:
                await self._stream_data(request, response, session, envelope.number)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-answer; its next poll asks for a rewind
        return response

    @property
    def _payload_limit(self) -> int:
        """The most downlink bytes one response envelope carries (the body stays in max_body)."""
        return max(self.limits.max_body - ENVELOPE_OVERHEAD, 1024)

    async def _probe(self, response: web.StreamResponse, session: HttpSession, number: int) -> None:
        """Two envelopes: the second once the client says it has the first (or PROBE_WAIT).

        The first is padded to an uneven size of some kilobytes, as data would be:
        a proxy that forwards small writes at once but holds a partly filled
        buffer (nginx with proxy_buffering on) must not pass for a streaming path.
        The client acknowledges the first with a SEND flagged PROBE; the second says
        whether that came in (ACKED), which proves the path delivered the first
        before the response ended, whatever the clocks and schedulers did. It goes
        out PROBE_SECONDS after the first at the earliest, so timing tells as well.
        """
        session.probe_acked.clear()
        offset, _ = session.take(0)
        padding = PROBE_PADDING + random.randrange(1024)
        await response.write(
            self.keys.seal_response(self._state(session, number, offset=offset), padding=padding)
        )
        started = time.monotonic()
        await asyncio.sleep(PROBE_SECONDS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(PROBE_WAIT - (time.monotonic() - started), 0)):
                await session.probe_acked.wait()
        flags = ResponseFlags.ACKED if session.probe_acked.is_set() else ResponseFlags.NONE
        offset, _ = session.take(0)
        status = Status.GONE if session.closed else Status.OK
        envelope = self._state(session, number, status, offset, flags)
        await response.write(self.keys.seal_response(envelope, padding=_padding()))

    async def _stream_data(
        self,
        request: web.Request,
        response: web.StreamResponse,
        session: HttpSession,
        number: int,
    ) -> None:
        """Envelopes as data comes, until the poll timeout or STREAM_BYTES."""
        deadline = time.monotonic() + min(STREAM_SECONDS, self.limits.poll_timeout)
        transport = request.transport
        sent = 0
        first = True  # the first envelope goes out at once, even empty
        rewinds = session.rewinds
        while sent < STREAM_BYTES and not session.closed and session.rewinds == rewinds:
            if not first:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await session.wait_unsent(remaining):
                    return
                if session.rewinds != rewinds:
                    return  # the client lost an answer, maybe this one: it polls anew
            first = False
            if transport is None or transport.is_closing():
                return  # the client (or a proxy on the way) hung up: leave the bytes to others
            offset, chunk = session.take(min(self._payload_limit, STREAM_BYTES - sent))
            try:
                await response.write(self._envelope(session, number, offset, chunk))
            except ConnectionError:
                session.unsend(offset)  # these never left: the next poll gets them
                raise
            sent += len(chunk)

    def _envelope(self, session: HttpSession, number: int, offset: int, chunk: bytes) -> bytes:
        status = Status.GONE if session.closed and not chunk else Status.OK
        return self.keys.seal_response(
            self._state(session, number, status, offset), chunk, padding=_padding()
        )
