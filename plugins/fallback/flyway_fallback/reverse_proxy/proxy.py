"""``-P http(s)://host:port[/prefix]``: every visitor without the password gets the site itself.

Theory of operation. Requests aiohttp parsed go upstream on a connection of the
fallback's ``UpstreamPool`` (``upstream.py``: ``connections`` at most, default
``POOL_SIZE``, kept alive; more requests wait for one, so that visitors of the
site, however many, leave the tunnel most of the server's one core). The head is
written here (``headers.forward_head``): method, target (the prefix before it,
nothing re-encoded), version and headers as the client sent them but for
``headers.py``'s changes, framed as aiohttp's client framed it, nothing of a
client's own added (no ``User-Agent``, ``Accept``, ``Accept-Encoding`` or
``Content-Type``). A body up to ``body.BUFFER`` (64 KiB) is read whole before a
pooled connection is taken (nginx's ``proxy_request_buffering``), so slow
uploads hold no connection to the site; a chunked one as far as that, a declared
longer one (or a chunked one after an ``Expect``) not at all (``_buffered``).
The body follows the head: bytes already here in the same write, the rest
streamed up from ``request.content`` as it comes (``body.py``). The answer,
parsed by aiohttp's parser, streams down through a ``ProxiedResponse``, not
decompressed. A pooled
connection the site closed unseen gets an idempotent request, with nothing
streamed, sent again once on a new one (as aiohttp's client did).

Some requests the pooled connections cannot carry as they came: upgrades (WebSocket),
``CONNECT``, targets that are not a path (``*``, absolute URIs), other HTTP
versions, HTTP/1.1 without ``Host``, ``Expect: 100-continue`` on a sized body.
For those, when nothing was pipelined after them and they have no body (or, with
``Expect``, a sized one), the front door hands the whole connection to a
``Splice`` with the request's head rebuilt (plus ``X-Forwarded-*``), and the site
speaks for itself from then on: a 101 and the WebSocket that follows, or its own
answer. The door does the same, unasked, with a connection whose first request it
cannot parse at all (``open_pipe``: ``RawFallback``).

When the site cannot be reached the visitor gets nginx's 502 page; when it does not
answer within ``timeout`` (nginx's ``proxy_connect_timeout`` and
``proxy_read_timeout``, 60 s), its 504 page, and so does a request that waited
``timeout`` for a pool connection (all held by other visitors). An upstream that
fails mid-answer has the client connection closed, as nginx does; so has a client
that takes nothing of the answer for ``send_timeout`` (nginx's ``send_timeout``,
60 s, between two writes), which frees its upstream connection for the next.
An ``https://`` site's certificate is not verified (nginx's ``proxy_ssl_verify
off``: a self-signed site works) unless ``verify`` (``--reverse-proxy-verify``:
against the system's CAs, and the name in ``-P``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from yarl import URL

from flyway_core import ConfigError
from flyway_core.frontdoor_handover import claim
from flyway_core.frontdoor_pages import page
from flyway_fallback.reverse_proxy.body import BUFFER, send_body
from flyway_fallback.reverse_proxy.headers import door_location, forward_head, request_head
from flyway_fallback.reverse_proxy.response import ProxiedResponse
from flyway_fallback.reverse_proxy.upstream import UpstreamClosed, UpstreamConnection, UpstreamPool
from flyway_fallback.splice import Splice

__all__ = ["MAX_SPLICES", "POOL_SIZE", "SEND_TIMEOUT", "ReverseProxyFallback", "Upstream"]

log = logging.getLogger(__name__)
SEND_TIMEOUT = 60.0  # nginx's send_timeout: a client write that makes no progress for this long
POOL_SIZE = 8  # connections to the site at once; more requests wait for one (see __init__)
MAX_SPLICES = 1024  # connections handed over whole at once (more get the door's answer)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # aiohttp's
_COALESCE = 1 << 14  # a body up to this size leaves in one write with its head
_Exchange = tuple[UpstreamConnection, RawResponseMessage, StreamReader, "asyncio.Task[None] | None"]


class Upstream:
    """Where the site is: ``http(s)://host:port[/prefix]``."""

    def __init__(self, spec: str) -> None:
        url = URL(spec)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"-P {spec}: expected http://HOST:PORT[/PREFIX] or https://...")
        if url.query_string or url.fragment:
            raise ConfigError(f"-P {spec}: a query or fragment has no place in -P")
        self.url = url
        self.host = url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls = url.scheme == "https"
        self.prefix = url.raw_path.rstrip("/")
        self.host_header = url.raw_authority

    def target(self, raw_path: str) -> str:
        """The request target upstream: the prefix, then the client's path and query."""
        return self.prefix + raw_path if raw_path.startswith("/") else raw_path

    def __str__(self) -> str:
        return str(self.url)


class ReverseProxyFallback:
    """Answers every non-tunnel request with the upstream site's answer (a ``RawFallback``)."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        use_upstream_host: bool = False,
        timeout: float = 60.0,
        connections: int = POOL_SIZE,
        send_timeout: float = SEND_TIMEOUT,
        verify: bool = False,
    ) -> None:
        self.upstream = upstream
        self.send_timeout = send_timeout
        self.connections = connections
        self.use_upstream_host = use_upstream_host
        self.timeout = timeout
        self.splices = 0  # connections handed over whole, open now
        self._pool: UpstreamPool | None = None
        self._ssl = _client_ssl(verify) if upstream.tls else None

    def __str__(self) -> str:
        return f"reverse proxy to {self.upstream}"

    @property
    def pool(self) -> UpstreamPool:
        """The connections to the site (made on first use, in the running loop)."""
        if self._pool is None:
            self._pool = UpstreamPool(
                self.upstream.host,
                self.upstream.port,
                ssl=self._ssl,
                size=self.connections,
                timeout=self.timeout,
            )
        return self._pool

    async def close(self) -> None:
        """Close the pool's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def _host(self) -> str | None:
        return self.upstream.host_header if self.use_upstream_host else None

    # --- Fallback -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if _needs_whole_connection(request):
            held = claim(request)
            if held is not None:
                pipe = await self.open_pipe()
                if pipe is not None:
                    target = self.upstream.target(request.raw_path)
                    head = request_head(request, target, upstream_host=self._host)
                    if _expects(request):  # what came of the body already, as it came
                        head += request.content.read_nowait()
                    return held.hand_over(pipe, head)
                held.release()
                return page(502, request)
            if not request.raw_path.startswith("/"):  # nginx's answer to what it cannot route
                return page(400, request, close=True)
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        pool = self.pool  # this request's, even if close() drops it meanwhile
        target = self.upstream.target(request.raw_path)
        body: bytes | StreamReader | None = None
        first = b""
        if request.body_exists:
            if not request.can_read_body:  # a tunnel handler read it to judge it; aiohttp kept it
                body = await request.read()
            elif request.content.is_eof():  # all here already: no need to stream it
                body = request.content.read_nowait()
            else:
                try:
                    first, whole = await _buffered(request)
                except HttpProcessingError as exc:  # a chunked body that broke: nginx's 400
                    log.debug("a request body broke before it went up: %r", exc)
                    return page(400, request, close=True)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    log.debug("a client left before its body came: %r", exc)
                    if request.transport is not None:
                        request.transport.close()
                    raise ConnectionResetError("the client left mid-body") from None
                body = first if whole else request.content
        length = len(body) if isinstance(body, bytes) else None
        if isinstance(body, StreamReader):  # framed as the client framed it, as aiohttp parsed it
            length = request.content_length
        chunked = isinstance(body, StreamReader) and length is None
        head = forward_head(
            request,
            target,
            upstream_host=self._host,
            site_host=self.upstream.host_header,
            length=length,
            chunked=chunked,
        )
        if isinstance(body, bytes) and len(body) < _COALESCE:
            head, body = head + body, None  # one write, as aiohttp's client coalesces
        try:
            exchange = await self._ask(
                pool, request.method, head, body, chunked=chunked, first=first
            )
        except TimeoutError:
            return page(504, request)
        except OSError as exc:
            log.debug("the upstream %s failed: %r", self.upstream, exc)
            return page(502, request)
        connection, message, payload, upload = exchange
        reuse = False
        try:
            host, port = self.upstream.host, self.upstream.port
            response = ProxiedResponse(
                message,
                payload,
                client_keeps_alive=request.keep_alive,
                location=lambda value: door_location(value, request, host, port),
            )
            await response.prepare(request)
            try:
                while piece := await payload.readany():
                    await self._send(response.write(piece), response, len(piece), request)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("the upstream %s failed mid-answer: %r", self.upstream, exc)
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("the upstream failed mid-answer") from None
            reuse = upload is None or upload.done()
            await self._send(response.write_eof(), response, 0, request)
        finally:  # an upload still going: the site answered before the body's end, not reused
            await _end(pool, connection, upload, reuse=reuse)
        return response

    async def _ask(
        self,
        pool: UpstreamPool,
        method: str,
        head: bytes,
        body: bytes | StreamReader | None,
        *,
        chunked: bool,
        first: bytes = b"",
    ) -> _Exchange:
        """Send a request on a pooled connection; return it, the answer's head and body reader.

        A connection the site closed while it sat in the pool is found out only
        now: when nothing of the answer came and the body can be sent again, the
        request is sent once more on a new connection (as aiohttp's client does,
        for the methods it may repeat).
        """
        retry = not isinstance(body, StreamReader) and method in _IDEMPOTENT
        connection = await pool.acquire()
        while True:
            upload: asyncio.Task[None] | None = None
            reused = connection.requests > 0
            try:
                answer = connection.send(method, head)
                if isinstance(body, StreamReader):
                    sending = send_body(connection, body, chunked=chunked, first=first)
                    upload = asyncio.create_task(sending)
                else:
                    if body:
                        connection.write(body)
                    connection.sent()
                message, payload = await answer
            except UpstreamClosed:
                await _end(pool, connection, upload, reuse=False)
                if not (retry and reused and not connection.received):
                    raise
                retry = False
                connection = await pool.acquire(fresh=True)
                continue
            except BaseException:
                await _end(pool, connection, upload, reuse=False)
                raise
            return connection, message, payload, upload

    async def _send(
        self,
        write: Coroutine[object, object, None],
        response: ProxiedResponse,
        size: int,
        request: web.Request,
    ) -> None:
        """Await ``write`` to the client; one stuck ``send_timeout`` closes the client.

        The timer is armed only when the write can wait (``response.can_wait``).
        """
        if not response.can_wait(size):
            await write
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await write
        except TimeoutError:
            log.debug("a client took nothing for %s s: closed", self.send_timeout)
            if request.transport is not None:
                request.transport.abort()  # its buffered answer goes too, as nginx's close
            raise ConnectionResetError("the client stopped reading") from None

    # --- RawFallback ----------------------------------------------------------------------

    async def open_pipe(self) -> asyncio.Protocol | None:
        """Connect to the site for a connection handed over whole; None if it cannot be."""
        if self.splices >= MAX_SPLICES:
            return None
        loop = asyncio.get_running_loop()
        splice = Splice(on_end=self._spliced)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.create_connection(
                    lambda: splice.upstream,
                    self.upstream.host,
                    self.upstream.port,
                    ssl=self._ssl,
                    server_hostname=self.upstream.host if self.upstream.tls else None,
                )
        except (TimeoutError, OSError) as exc:
            log.debug("cannot reach %s for a raw connection: %r", self.upstream, exc)
            return None
        self.splices += 1
        return splice.client

    def _spliced(self) -> None:
        self.splices -= 1


async def _buffered(request: web.Request) -> tuple[bytes, bool]:
    """Read what of ``request``'s body comes before a pooled connection is taken; whether all.

    A declared body up to ``BUFFER`` bytes is read whole; a chunked one up to
    ``BUFFER`` bytes (all of it, if it ends sooner); one declared longer not at
    all (its head goes first: the site may answer from it, as nginx's 413), nor a
    chunked one with ``Expect: 100-continue`` (the door sent the 100 already; the
    site's answer from the head follows it at once). A client sending
    slowly holds no connection to the site meanwhile: the door's body timeout
    governs it. Memory: ``BUFFER`` bytes a request at most, and aiohttp reads one
    request of a connection at a time, so ``--max-connections`` times ``BUFFER``
    (4096 x 64 KiB, 256 MiB) in the worst case, beside the up to twice ``BUFFER``
    aiohttp's own reader of each connection holds before it pauses the socket.
    """
    content, length = request.content, request.content_length
    if length is not None:
        if length > BUFFER:
            return b"", False
        return await content.readexactly(length), True
    if request.headers.get("Expect", "").lower() == "100-continue":
        return b"", False
    data = bytearray()
    while len(data) < BUFFER:
        piece = await content.read(BUFFER - len(data))
        if not piece:
            return bytes(data), True
        data += piece
    return bytes(data), content.at_eof()


async def _end(
    pool: UpstreamPool,
    connection: UpstreamConnection,
    upload: asyncio.Task[None] | None,
    *,
    reuse: bool,
) -> None:
    """End an exchange: stop its upload if it still runs (the connection is then not
    reused), and give the connection back to ``pool`` on every path."""
    try:
        if upload is not None and not upload.done():
            reuse = False
            upload.cancel()
            await asyncio.wait([upload])
    finally:
        pool.release(connection, reuse=connection.finished() and reuse)


def _client_ssl(verify: bool) -> ssl.SSLContext:
    """TLS to an ``https://`` site: unverified unless asked, as nginx (``proxy_ssl_verify off``)."""
    context = ssl.create_default_context()  # the system's CAs
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _expects(request: web.BaseRequest) -> bool:
    expect = request.headers.get("Expect", "").lower() == "100-continue"
    return expect and request.content_length is not None


def _needs_whole_connection(request: web.BaseRequest) -> bool:
    """Whether the pooled client could not send ``request`` as the client did.

    That includes ``Expect: 100-continue`` on a sized body: the front door left the
    100 to the site, which sends it, or not, itself.
    """
    if "Upgrade" in request.headers or request.method == "CONNECT":
        return True
    if _expects(request):
        return True
    if not request.raw_path.startswith("/"):
        return True
    if request.body_exists:
        return False
    if request.version not in ((1, 0), (1, 1)):
        return True
    return request.version == (1, 1) and "Host" not in request.headers
