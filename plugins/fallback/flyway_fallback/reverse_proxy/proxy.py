"""``-P http(s)://host:port[/prefix]``: every visitor without the password gets the site itself.

Theory of operation. Requests aiohttp parsed go upstream through a pooled
``aiohttp.ClientSession`` (one per fallback, ``connections`` at most, default
``POOL_SIZE``, kept alive; more requests wait for one, so that visitors of the
site, however many, leave the tunnel most of the server's one core): method,
target (the prefix before it, nothing re-encoded), version and headers as the
client sent them but for ``headers.py``'s changes; the body
streams up from ``request.content`` (or, if a tunnel handler had to read it to
judge it, from the bytes aiohttp kept), and the answer streams down through a
``ProxiedResponse``. aiohttp's client adds nothing of its own (no ``User-Agent``,
``Accept``, ``Accept-Encoding`` or ``Content-Type``; no cookie jar; bodies are not
decompressed).

Some requests the pooled client cannot send as they came: upgrades (WebSocket),
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
from aiohttp.http import HttpVersion
from yarl import URL

from flyway_core import ConfigError
from flyway_core.frontdoor_handover import claim
from flyway_core.frontdoor_pages import page
from flyway_fallback.reverse_proxy.body import RequestBody
from flyway_fallback.reverse_proxy.headers import door_location, request_head, request_headers
from flyway_fallback.reverse_proxy.response import ProxiedResponse
from flyway_fallback.splice import Splice

__all__ = ["MAX_SPLICES", "POOL_SIZE", "SEND_TIMEOUT", "ReverseProxyFallback", "Upstream"]

log = logging.getLogger(__name__)
SEND_TIMEOUT = 60.0  # nginx's send_timeout: a client write that makes no progress for this long
POOL_SIZE = 8  # connections to the site at once; more requests wait for one (see __init__)
MAX_SPLICES = 1024  # connections handed over whole at once (more get the door's answer)
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_CHUNK = 1 << 16


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
        self._connector: aiohttp.TCPConnector | None = None
        self._sessions: dict[HttpVersion, aiohttp.ClientSession] = {}
        self._ssl: ssl.SSLContext | bool = _client_ssl(verify) if upstream.tls else False

    def __str__(self) -> str:
        return f"reverse proxy to {self.upstream}"

    def _client(self, version: HttpVersion) -> aiohttp.ClientSession:
        """The pool's session for requests of ``version`` (both share one connector)."""
        session = self._sessions.get(version)
        if session is None:
            if self._connector is None:
                self._connector = aiohttp.TCPConnector(limit=self.connections, ssl=self._ssl)
            session = self._sessions[version] = aiohttp.ClientSession(
                connector=self._connector,
                connector_owner=False,
                version=version,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO,
                timeout=aiohttp.ClientTimeout(  # connect: the wait for the pool included
                    total=None, connect=self.timeout, sock_read=self.timeout
                ),
            )
        return session

    async def close(self) -> None:
        """Close the pool (its sessions and their connections)."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

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
        url = self.upstream.url.with_path("", encoded=True)
        url = URL(str(url) + self.upstream.target(request.raw_path), encoded=True)
        data: object = None
        if request.body_exists:
            if request.can_read_body:
                data = RequestBody(request.content, request.content_length)
            else:  # a tunnel handler read it to judge it; aiohttp kept the bytes
                data = await request.read()
        try:
            upstream = await self._client(request.version).request(
                request.method,
                url,
                headers=request_headers(request, upstream_host=self._host),
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return page(504, request)
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("the upstream %s failed: %r", self.upstream, exc)
            return page(502, request)
        async with upstream:
            host, port = self.upstream.host, self.upstream.port
            response = ProxiedResponse(
                upstream,
                client_keeps_alive=request.keep_alive,
                location=lambda value: door_location(value, request, host, port),
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await self._send(response.write(chunk), request)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("the upstream %s failed mid-answer: %r", self.upstream, exc)
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("the upstream failed mid-answer") from None
            await self._send(response.write_eof(), request)
        return response

    async def _send(self, write: Coroutine[object, object, None], request: web.Request) -> None:
        """Await ``write`` to the client; one stuck ``send_timeout`` closes the client."""
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
                    ssl=self._ssl or None,
                    server_hostname=self.upstream.host if self.upstream.tls else None,
                )
        except (TimeoutError, OSError) as exc:
            log.debug("cannot reach %s for a raw connection: %r", self.upstream, exc)
            return None
        self.splices += 1
        return splice.client

    def _spliced(self) -> None:
        self.splices -= 1


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
