"""The front door's connections: nginx's answers to bad requests, deadlines, and a cap.

Theory of operation. aiohttp's ``web.RequestHandler`` is the protocol of each
connection; ``DoorProtocol`` subclasses it in three places and is made by
``ConnectionGuard.protocol`` in place of aiohttp's own factory (the runner's
``web.Server`` still routes every request and tracks the connection).

- ``handle_error`` answers what aiohttp could not parse, and any failure, with
  nginx's page (``frontdoor_pages``) instead of aiohttp's text, and never logs a
  traceback for a peer's doing.
- ``data_received`` notes when a request head began and when bytes last came, so
  the guard's sweep (a timer every quarter of the shortest deadline) can close a
  connection that sends its head slower than ``header_timeout`` (nginx's
  ``client_header_timeout``: from the connection's start for the first request,
  from its first byte for later ones) or pauses a body longer than
  ``body_timeout`` between reads (``client_body_timeout``). The wait for an answer
  is never timed: a long poll holds its response as long as it likes. Idle
  kept-alive connections close after ``keepalive_timeout`` (aiohttp's own timer).
  A WebSocket after its 101 is the session's business, not the guard's.
- ``connection_made`` counts connections. Past ``max_connections`` the guard
  makes room as nginx does when it runs short: it closes the longest-idle
  kept-alive connection, or failing that the oldest one still sending its head
  (a slow client); only when every connection is busy answering or carrying a
  session is the newcomer closed at once. So the door keeps answering when full.

- Hand-over (the parts a handler uses are in ``frontdoor_handover``). A fallback
  that is a ``RawFallback`` (the reverse proxy) can take a
  connection off aiohttp and carry it, as it stands, to the site it fronts: the
  door's own bytes are then no longer HTTP to it. That happens when the *first*
  request of a connection cannot be parsed (the site answers the very bytes the
  peer sent, up to ``FIRST_BYTES_KEPT``, instead of the door's nginx page), and
  when a handler ``claim``s a parsed request's connection (an upgrade, a request
  aiohttp's client cannot send). While the pipe to the site is being opened the
  door holds what else arrives; then ``transport.set_protocol`` gives the socket
  to the pipe with everything held, and aiohttp forgets the connection. When the
  site cannot be reached the door answers as before (its page, or the claim is
  released and the held bytes are parsed).

Like nginx on these timeouts, a dropped connection gets no answer. What this
reads of aiohttp's internals (``_request_count``, ``_messages``,
``_payload_parser``, ``_reading_paused``, ``_buffer_paused``, ``_request_in_progress``,
``_message_tail``, ``_manager``, ``_keepalive_handle``) is pinned by
tests/test_front_door.py against the installed aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from flyway_core.events import Event, NotTunnelTraffic
from flyway_core.frontdoor_handover import Claim, HandOver, RawFallback, claim
from flyway_core.frontdoor_pages import HEADER_TOO_LARGE, ClosingPage, page_body
from flyway_core.rlimits import open_files_limit

if TYPE_CHECKING:
    from aiohttp.streams import StreamReader

    from flyway_core.settings import FrontDoorLimits

__all__ = ["FIRST_BYTES_KEPT", "Claim", "ConnectionGuard", "DoorProtocol", "RawFallback", "claim"]
# Claim, claim and RawFallback live in frontdoor_handover; they are named here too, as the
# guard's connections are what they hand over.

log = logging.getLogger(__name__)
_EOF_POLL = 0.01  # seconds between looks at a half-closed connection's pending answers
_LINE_LIMIT = 8190  # aiohttp's max_line_size: a longer request line is nginx's 414
FIRST_BYTES_KEPT = 40 << 10  # a connection's first bytes kept for a hand-over (nginx: 32 KiB heads)
_HOLD_LIMIT = 1 << 20  # bytes held during a hand-over before the socket is no longer read


class DoorProtocol(web.RequestHandler):
    """aiohttp's request handler, answering as nginx and timed by a ``ConnectionGuard``."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, loop=guard.loop, **kwargs)
        self.guard = guard
        self.opened = self.last_read = guard.loop.time()
        self.head_since: float | None = self.opened  # reading a head since (None: not)
        self.body: StreamReader | None = None  # the body of the last head parsed
        self.dropped = False  # the guard closed it (and said so)
        self._head_start = b""  # the first bytes of the head being read (to tell 414 from 400)
        # every byte until the first head parses, when a fallback could take the connection
        self._first: bytearray | None = bytearray() if guard.raw is not None else None
        self._held: bytearray | None = None  # bytes arriving during a hand-over (None: none)
        self._eof = False  # the peer half-closed
        self._unparsed: bytes | None = None  # an unparsable first request's bytes, for the site

    # --- what the guard looks at ---------------------------------------------------------

    @property
    def upgraded(self) -> bool:
        return self._payload_parser is not None

    @property
    def reading_body(self) -> bool:
        return self.body is not None and not self.body.is_eof()

    @property
    def idle(self) -> bool:
        """Kept alive between requests, with nothing of the next one yet."""
        busy = self._request_in_progress or self.reading_body or self.upgraded
        return not busy and self.head_since is None

    @property
    def paused(self) -> bool:
        """We stopped reading (a handler has not read the body yet), not the peer."""
        return bool(self._reading_paused or self._buffer_paused)

    @property
    def peer(self) -> str:
        name = self.peername
        return str(name[0]) if isinstance(name, tuple) else "?"

    # --- aiohttp's RequestHandler --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows a bool
        """The peer half-closed: answer what it asked, then close (as nginx does).

        aiohttp's own handler lets the transport close at once, so a client that
        half-closes after its request (``shutdown(SHUT_WR)``) got no answer at all.
        A request cut short (its head or body unfinished) is closed unanswered, as
        nginx does; so is an upgraded connection (a WebSocket): its reader learns of
        the end only from the close.
        """
        self._eof = True
        if self.upgraded:
            return None
        if self._held is not None:  # a hand-over is under way: its pipe gets the EOF
            return True
        if self.reading_body or self.head_since is not None:
            return None  # a request cut short: nginx closes without an answer, and so do we
        self._close_when_idle()
        return True

    def _close_when_idle(self) -> None:
        """Close once every request already received is answered (pipelined ones too)."""
        if self.transport is None or self._held is not None:
            return
        waiter = self._waiter  # aiohttp's: set while its loop waits for the next request
        if self._messages:  # pipelined requests wait their turn: look again after a while
            self.guard.loop.call_later(_EOF_POLL, self._close_when_idle)
        elif waiter is not None and not waiter.done():
            self.force_close()  # idle: the transport sends what it holds, then its FIN
        else:
            self.close()  # the request in hand is the last: aiohttp closes right after it

    def data_received(self, data: bytes) -> None:
        if self._held is not None:  # a hand-over is under way: keep it for the pipe
            self._held += data
            if len(self._held) > _HOLD_LIMIT and self.transport is not None:
                self.transport.pause_reading()
            return
        if self.upgraded:
            super().data_received(data)
            return
        now = self.last_read = self.guard.loop.time()
        if data and self.head_since is None and not self.reading_body:
            self.head_since = now
        if self.head_since is not None and len(self._head_start) < _LINE_LIMIT:
            self._head_start += data[: _LINE_LIMIT - len(self._head_start)]
        if self._first is not None:
            self._first += data
            if len(self._first) > FIRST_BYTES_KEPT:
                self._first = None
        parsed = self._request_count
        super().data_received(data)
        new = self._request_count - parsed
        if new and self._messages:
            message, self.body = self._messages[-1]
            self.head_since = None
            if isinstance(message, RawRequestMessage):  # not an error (handle_error reads it)
                self._head_start = b""
            first, _ = self._messages[len(self._messages) - min(new, len(self._messages))]
            if parsed == 0 and self._first is not None and not isinstance(first, RawRequestMessage):
                self._unparsed = bytes(self._first)  # handle_error offers them to the site
                self._held = bytearray()
            self._first = None

    # --- hand-over --------------------------------------------------------------------------

    def hold(self) -> bool:
        """Keep what arrives from now on for a hand-over; False if that cannot work now.

        It cannot when requests after this one were parsed already (pipelined): their
        bytes are gone from the socket's stream.
        """
        if self._held is not None or self._messages or self.transport is None:
            return False
        self._held = bytearray()
        return True

    def release(self) -> None:
        """Give up a hand-over: what was held is parsed as usual."""
        held, self._held = self._held, None
        if self.transport is not None:
            self.transport.resume_reading()
        if held:
            self.data_received(bytes(held))

    def hand_over(self, pipe: asyncio.Protocol, first: bytes) -> None:
        """Make ``pipe`` this socket's protocol, with ``first`` and what was held; forget it."""
        held, self._held = bytes(self._held or b""), None
        transport, self.transport = self.transport, None  # aiohttp no longer writes or closes it
        self.guard.forget(self)
        self.force_close()  # ends aiohttp's request loop; with no transport it closes nothing
        if self._manager is not None:
            self._manager.connection_lost(self, None)
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if transport is None or transport.is_closing():
            pipe.connection_lost(None)
            return
        transport.set_protocol(pipe)
        pipe.connection_made(transport)
        if first or held:
            pipe.data_received(first + held)
        if self._eof:
            pipe.eof_received()
        transport.resume_reading()  # held bytes may have paused it (uvloop's is no ReadTransport)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer as nginx would: its 400 (or 414, or too-large) page, else its 500."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is closed")
        if isinstance(exc, LineTooLong):
            code = HEADER_TOO_LARGE if b"\n" in self._head_start else 414
        elif status == 400 or isinstance(exc, HttpProcessingError):
            code = 400
        else:
            code = 500
        gone = self.transport is None or self.transport.is_closing()
        if code != 500:
            reason = (message or str(exc) or "unreadable").splitlines()[0].rstrip(":")
            self.guard.report(self.peer, f"malformed request: {reason}")
            unparsed, self._unparsed = self._unparsed, None
            if unparsed is not None and self.guard.raw is not None and not gone:
                return HandOver(self, self.guard.raw.open_pipe, code, unparsed)
        elif gone or isinstance(exc, ConnectionError):
            if not self.dropped:  # else the guard has reported why already
                self.guard.report(self.peer, "request aborted")
        else:
            log.error("a request from %s failed in flyway: %r (-vv: traceback)", self.peer, exc)
            log.debug("the failure", exc_info=exc)
        return ClosingPage(code, page_body(code))  # never kept alive

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's own complaints, about what a peer did: one line at -vv, no traceback."""
        text = str(args[0]) % args[1:] if len(args) > 1 else str(args[0] if args else "")
        log.debug("%s: %r", text, kwargs.get("exc_info"))


class ConnectionGuard:
    """Makes the door's protocols, and closes the ones that are too slow or one too many."""

    def __init__(
        self,
        server: web.Server,
        limits: FrontDoorLimits,
        emit: Callable[[Event], None],
        *,
        raw: RawFallback | None = None,
        **handler_args: Any,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.raw = raw  # a fallback that takes connections unparsed (None: pages only)
        self.limits = limits
        self.max_connections = _fit_descriptors(limits.max_connections)
        self.connections: set[DoorProtocol] = set()
        self.dropped = 0  # connections closed for slowness or room (for tests and stats)
        self._server = server
        self._emit = emit
        self._args = {"keepalive_timeout": limits.keepalive_timeout, **handler_args}
        shortest = min(limits.header_timeout, limits.body_timeout)
        self._tick = min(max(shortest / 4, 0.05), 5.0)
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> DoorProtocol:
        """The protocol factory for ``loop.create_server``."""
        return DoorProtocol(self._server, self, **self._args)

    def start(self) -> None:
        self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def report(self, peer: str, reason: str) -> None:
        self._emit(NotTunnelTraffic(peer, reason))

    def admit(self, newcomer: DoorProtocol) -> None:
        self.connections.add(newcomer)
        if len(self.connections) <= self.max_connections:
            return
        others = [c for c in self.connections if c is not newcomer]
        idle = [c for c in others if c.idle]
        heads = [c for c in others if c.head_since is not None]
        if idle:
            self._drop(min(idle, key=lambda c: c.last_read), "closed to make room")
        elif heads:
            self._drop(min(heads, key=lambda c: c.head_since or 0.0), "closed to make room")
        else:
            self._drop(newcomer, f"refused: {self.max_connections} connections busy")

    def forget(self, protocol: DoorProtocol) -> None:
        self.connections.discard(protocol)

    def _sweep(self) -> None:
        now = self.loop.time()
        limits = self.limits
        for c in list(self.connections):
            if c.upgraded:
                continue
            if c.head_since is not None and now - c.head_since > limits.header_timeout:
                self._drop(c, "request head timed out")
            elif c.reading_body and not c.paused and now - c.last_read > limits.body_timeout:
                self._drop(c, "request body timed out")
        self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def _drop(self, protocol: DoorProtocol, reason: str) -> None:
        self.dropped += 1
        protocol.dropped = True
        self.connections.discard(protocol)
        self.report(protocol.peer, reason)
        protocol.force_close()


def _fit_descriptors(wanted: int) -> int:
    """Cap connections at half the open-file limit: the rest is for the streams they carry."""
    limit = open_files_limit()
    if not limit or wanted <= limit // 2:
        return wanted
    log.info("at most %d connections: the open-file limit is %d", limit // 2, limit)
    return max(limit // 2, 1)
