"""The reverse proxy's connections to the site: a pool of raw HTTP/1.x connections, kept alive.

Theory of operation. ``UpstreamPool`` holds at most ``size`` connections open to
the site; a request takes one (an idle one if there is one, else a new one), or
waits for one to come free, ``timeout`` at most for both the wait and the connect.
An ``UpstreamConnection`` is an asyncio protocol: the proxy writes a request's
head and body to it itself (``send``, ``write``) and gets back a future of the
answer's head; the answer is parsed by aiohttp's own ``HttpResponseParser`` (the
llhttp one when built), fed from ``data_received`` as aiohttp's ``ResponseHandler``
feeds it, which hands over the head and a ``StreamReader`` of the body (flow
controlled: a full reader pauses the socket). Interim answers (1xx) are skipped,
as aiohttp's client skips them, ``MAX_INTERIM`` at most (more fail the exchange
with ``UpstreamBroken``: a site flooding 100s cannot hold a client for good).
The read timer starts once the request was sent whole (``sent``, as nginx's
``proxy_read_timeout``): a client's slow upload is the door's body timeout's
business, not the site's; an answer the site sends earlier is still taken at
once, and from its first byte the timer runs. While the body is going up, a site
that takes none of it for ``timeout`` fails it too (``drain``: nginx's
``proxy_send_timeout``). The site not answering for ``timeout`` between
two reads fails the head (or the body) with ``UpstreamTimeout``; it closing first
fails them with ``UpstreamClosed`` (a body fails with aiohttp's payload error when
it came short of its length); an answer the parser refuses, with
``UpstreamBroken``, and so does a 101 (no pooled request asks to upgrade: nginx's
502). Bytes past a whole answer (a body to a HEAD or with a 304, more than its
``Content-Length``) leave the answer as it was and the connection unreused, as
nginx does (``_answer_before``). A connection goes back to the pool only when its answer was
read whole and neither side said ``close``; one the site closed while idle leaves
the pool at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from aiohttp import ClientPayloadError
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

__all__ = [
    "KEEPALIVE",
    "MAX_INTERIM",
    "UpstreamBroken",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamTimeout",
]

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's keepalive_timeout)
_LIMIT = 1 << 16  # a body reader pauses the socket over twice this (aiohttp's read_bufsize)
_NO_BODY = frozenset({204, 304})
MAX_INTERIM = 16  # interim answers (1xx) taken before one final answer; more are a 502

Answer = tuple[RawResponseMessage, StreamReader]


class UpstreamClosed(ConnectionError):
    """The site closed the connection before its answer's head."""


class UpstreamBroken(ConnectionError):
    """The site's answer is not HTTP that aiohttp's parser takes."""


class UpstreamTimeout(TimeoutError):
    """The site sent nothing for the read timeout."""


class UpstreamConnection(BaseProtocol):
    """One connection to the site: requests written out, answers parsed as they come."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        on_lost: Callable[[UpstreamConnection], None],
    ) -> None:
        super().__init__(loop)
        self._timeout = timeout
        self._on_lost = on_lost
        self._answer: asyncio.Future[Answer] | None = None
        self._payload: StreamReader | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._interim = 0  # 1xx answers to the current request
        self._method = "GET"
        self._parser: HttpResponseParser | None = None
        self._heard: list[bytes] = []  # what came of the current answer before its head
        self.reusable = True  # nobody said close, nothing went wrong
        self.received = False  # a byte of the current answer came
        self.requests = 0  # sent on this connection so far
        self.idle_since = 0.0
        self.lost: asyncio.Future[None] = loop.create_future()

    # --- the proxy's side -----------------------------------------------------------------

    def send(self, method: str, head: bytes) -> asyncio.Future[Answer]:
        """Write a request's head; return the future of the answer's head and body reader.

        The read timer waits for ``sent`` (or the answer's first byte).
        """
        self.received = False  # nothing of this answer yet (a closed connection: retry)
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamClosed("the site closed the connection")
        self._method = method
        self._parser = self._new_parser(self)
        self._heard = []
        self._answer = answer = self._loop.create_future()
        self._payload = None
        self._interim = 0
        self.requests += 1
        transport.write(head)
        return answer

    def sent(self) -> None:
        """Say the request went out whole: the site's read timeout starts now."""
        self._last_read = self._loop.time()
        self._arm()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write request body bytes (framed by the caller)."""
        if self.transport is None or self.transport.is_closing():
            raise UpstreamClosed("the site closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the site took enough of what was written (when over the high-water mark).

        A site that takes nothing for ``timeout`` fails the exchange with ``UpstreamTimeout``.
        """
        if not self._paused:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._drain_helper()
        except TimeoutError:
            reason = UpstreamTimeout(f"the site took none of the body for {self._timeout} s")
            self._fail(reason)
            raise reason from None

    def finished(self) -> bool:
        """End the exchange; whether the connection may carry another request."""
        self._drop_timer()
        self._parser = None
        self._answer = None
        payload, self._payload = self._payload, None
        whole = payload is None or (payload.is_eof() and payload.exception() is None)
        transport = self.transport
        return self.reusable and whole and transport is not None and not transport.is_closing()

    def close(self) -> None:
        """Close the connection (what was written still leaves)."""
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close the connection at once: the exchange on it fails."""
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if data:
            self._last_read = self._loop.time()
            self.received = True
            self._arm()  # an answer before the body's end: the site is talking now
        parser = self._parser
        if parser is None:  # bytes nobody asked for (or after a failure): done with it
            if data:
                self._fail(UpstreamClosed("the site sent bytes unasked"))
            return
        if data and self._payload is not None and self._payload.is_eof():
            self.reusable = False  # bytes after the whole answer: nginx drops such a connection
        heading = self._answer is not None and not self._answer.done()
        if heading:
            self._heard.append(data)
        try:
            messages, upgraded, _ = parser.feed_data(data)
        except HttpProcessingError as exc:  # a site that breaks HTTP, or sent more than asked
            whole = self._answer_before() if heading else None
            if whole is None:
                self._fail(UpstreamBroken(f"the site's answer broke HTTP: {exc!r}"))
                return
            messages, upgraded = [m for m in whole if not 100 <= m[0].code < 200], False
            self.reusable = False  # the answer goes on; what came after it, not
            self._parser = None
        for message, payload in messages:
            if message.should_close:
                self.reusable = False
            if 100 <= message.code < 200 and message.code != 101:
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    self._fail(UpstreamBroken(f"the site sent over {MAX_INTERIM} 1xx answers"))
                    return
                continue  # interim: the final answer follows
            if message.code == 101:  # no pooled request asks for an upgrade: nginx's 502
                self._fail(UpstreamBroken("the site switched protocols unasked"))
                return
            answer = self._answer
            if answer is None or answer.done():
                self.reusable = False  # a second answer to one request
                continue
            self._heard = []
            if message.code in _NO_BODY:
                payload = EMPTY_PAYLOAD
            self._payload = payload
            payload.on_eof(self._drop_timer)  # at once if it is over already
            answer.set_result((message, payload))
        if upgraded:
            self.reusable = False

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._last_read = self._loop.time()  # the pause was ours, not the site's
        super().resume_reading(resume_parser)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.reusable = False
        self._drop_timer()
        parser, self._parser = self._parser, None
        payload = self._payload
        if parser is not None:
            try:
                parser.feed_eof()  # a body read until the close ends here
            except HttpProcessingError as short:  # came short of its length or its last chunk
                if payload is not None:
                    payload.set_exception(ClientPayloadError(f"the site's answer broke: {short!r}"))
        reason = UpstreamClosed(f"the site closed the connection ({exc!r})")
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(reason)
        elif payload is not None and not payload.is_eof():
            payload.set_exception(reason)
        if not self.lost.done():
            self.lost.set_result(None)
        self._on_lost(self)

    # --- inside ---------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        self._drop_timer()
        self._parser = None
        answer, payload = self._answer, self._payload
        if answer is not None and not answer.done():
            answer.set_exception(exc)
        elif payload is not None and not payload.is_eof():  # a whole body still goes on
            payload.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _on_timer(self) -> None:
        """Fail the exchange if the site sent nothing for the timeout (checked lazily)."""
        self._timer = None
        now = self._loop.time()
        if self._reading_paused:  # our reader is full: not the site's slowness
            self._last_read = now
        due = self._last_read + self._timeout
        if now < due:
            self._timer = self._loop.call_at(due, self._on_timer)
            return
        self._fail(UpstreamTimeout(f"the site sent nothing for {self._timeout} s"))

    def _new_parser(self, protocol: BaseProtocol) -> HttpResponseParser:
        return HttpResponseParser(
            protocol,
            self._loop,
            _LIMIT,
            payload_exception=ClientPayloadError,
            response_with_body=self._method != "HEAD",
            read_until_eof=True,
            auto_decompress=False,
        )

    def _answer_before(self) -> list[tuple[RawResponseMessage, StreamReader]] | None:
        """The messages of what came, cut where the final answer ends whole; None if it did not.

        For a site that sent more than its answer in the same read (a body to a
        HEAD or with a 304, bytes past its ``Content-Length``): aiohttp's parser
        refuses the whole read, nginx passes the answer on and drops the
        connection. The end is searched for by parsing starts of what came
        (at most twice the log of its size in parses, on this path only): the
        shortest start that holds a whole final answer or breaks HTTP.
        """
        raw, self._heard = b"".join(self._heard), []

        def parse(size: int) -> list[tuple[RawResponseMessage, StreamReader]] | None:
            parser = self._new_parser(BaseProtocol(self._loop))  # its flow control: none
            try:
                return list(parser.feed_data(raw[:size])[0])
            except HttpProcessingError:
                return None

        def whole(messages: list[tuple[RawResponseMessage, StreamReader]]) -> bool:
            return any(
                not 100 <= m.code < 200 and (m.code in _NO_BODY or p.is_eof()) for m, p in messages
            )

        low, high = 0, len(raw)
        while low < high:
            middle = (low + high) // 2
            messages = parse(middle)
            if messages is None or whole(messages):
                high = middle
            else:
                low = middle + 1
        messages = parse(low)
        return messages if messages is not None and whole(messages) else None

    def _arm(self) -> None:
        """Start the read timer, unless it runs or the answer came whole (or none is due)."""
        payload = self._payload
        if (
            self._timer is None
            and self._answer is not None
            and not (payload is not None and payload.is_eof())
        ):
            self._timer = self._loop.call_at(self._last_read + self._timeout, self._on_timer)

    def _drop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UpstreamPool:
    """At most ``size`` connections to ``host:port`` (TLS with ``ssl``), reused while alive."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: ssl.SSLContext | None,
        size: int,
        timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl
        self._timeout = timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[UpstreamConnection] = []  # the last one in is the first out
        self._open: set[UpstreamConnection] = set()

    @property
    def open(self) -> int:
        """How many connections to the site are open now."""
        return len(self._open)

    async def acquire(self, *, fresh: bool = False) -> UpstreamConnection:
        """Take a connection (``fresh``: a new one); wait ``timeout`` at most for a slot and it.

        Raises ``TimeoutError`` when that took too long, ``OSError`` when the site
        cannot be reached.
        """
        now = asyncio.get_running_loop().time()
        idle = self._idle
        if (
            not fresh
            and idle
            and not self._slots.locked()
            and now - idle[-1].idle_since < KEEPALIVE
        ):
            await self._slots.acquire()  # a free slot: this does not wait
            return idle.pop()
        async with asyncio.timeout(self._timeout):
            await self._slots.acquire()
            try:
                while self._idle and not fresh:
                    connection = self._idle.pop()
                    if now - connection.idle_since < KEEPALIVE:
                        return connection
                    connection.close()
                return await self._connect()
            except BaseException:
                self._slots.release()
                raise

    def release(self, connection: UpstreamConnection, *, reuse: bool) -> None:
        """Give ``connection`` back: kept for the next request if ``reuse``, else closed."""
        self._slots.release()
        if reuse and connection in self._open:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()

    async def close(self) -> None:
        """Close every connection and wait (briefly) until they are gone."""
        connections = list(self._open)
        self._idle.clear()
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=1.0)

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: UpstreamConnection(loop, self._timeout, self._forget),
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
        )
        self._open.add(connection)
        return connection

    def _forget(self, connection: UpstreamConnection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
