"""The server's front door: one aiohttp application on one port, shared by every transport.

Each transport mounts a request handler; a request no handler claims, and every
request that fails the handshake, is answered by the fallback, so a prober
without the password sees only the site the server fronts. The port is bound
before the transports start, so each sees the real port in ``bound``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from flyway_core.address import Address
from flyway_core.errors import ConfigError, FlywayError, HandshakeRejected, RemoteProtocolError
from flyway_core.events import (
    Event,
    Listening,
    NotTunnelTraffic,
    SessionDown,
    SessionUp,
    TunnelRejected,
)
from flyway_core.frontdoor_guard import ConnectionGuard
from flyway_core.frontdoor_handover import RawFallback
from flyway_core.frontdoor_pages import REASONS, expect_continue, page, stamp_headers
from flyway_core.protocol import (
    SUPPORTED_FEATURES,
    CloseReason,
    ReplayCache,
    ServerConnection,
    derive_master_key,
)
from flyway_core.rlimits import stream_budget
from flyway_core.session import Session
from flyway_core.stats import Stats
from flyway_core.upstream import Upstream

if TYPE_CHECKING:
    from flyway_core.interfaces import Carrier, Dialer, Fallback, RequestHandler, Transport
    from flyway_core.settings import Settings

__all__ = ["FlywayServer"]

log = logging.getLogger(__name__)
REFUSE_LINGER = 2.0  # seconds a refused session's carrier stays open for the Close to arrive


class FlywayServer:
    """Serves every transport and the fallback on one address (the FrontDoor transports see)."""

    def __init__(
        self,
        listen: Address,
        settings: Settings,
        *,
        transports: dict[str, Transport],
        fallback: Fallback,
        dialer_for: Callable[[Address], Dialer],
        emit: Callable[[Event], None],
        ssl_context: ssl.SSLContext | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.listen = listen
        self.settings = settings
        self.transports = {name: t for name, t in transports.items() if not t.client_only}
        self.stats = stats or Stats()
        self.bound = listen  # the real address once the port is bound (before transports serve)
        self.sessions: set[Session] = set()
        self.fallback_handler = fallback
        self._upstream = Upstream(
            dialer_for,
            emit,
            streams_per_session=settings.limits.streams_per_session,
            streams_in_all=stream_budget(),
            policy=settings.policy,
        )
        self._emit = emit
        self._ssl = ssl_context
        self.guard: ConnectionGuard | None = None  # the front door's connections, once serving
        self._handlers: list[RequestHandler] = []
        self._master = derive_master_key(settings.password)
        self._replay = ReplayCache()

    # --- the FrontDoor interface --------------------------------------------------------

    def add_handler(self, handler: RequestHandler) -> None:
        self._handlers.append(handler)

    def accept(self, hello: bytes, peer: str) -> ServerConnection | None:
        connection = ServerConnection(
            self._master,
            self._replay,
            now=time.time(),
            window=self.settings.window,
            idle_timeout=self.settings.idle_timeout,
            features=SUPPORTED_FEATURES,
        )
        try:
            events = connection.receive_data(hello, time.time())
        except RemoteProtocolError as exc:  # HandshakeRejected, or garbage after a good hello
            reason = str(exc) if isinstance(exc, HandshakeRejected) else f"after the hello: {exc}"
            self._emit(TunnelRejected(peer, reason))
            return None
        if not connection.accepted:  # a prefix: a transport hands over whole hellos only
            self._emit(TunnelRejected(peer, f"incomplete hello ({len(hello)} bytes)"))
            return None
        if len(events) != 1 or connection.hello_size != len(hello):  # the hello comes alone
            self._emit(TunnelRejected(peer, "unexpected records after the hello"))
            return None
        return connection

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """Answer ``request`` as the site; it is reported as not tunnel traffic, whoever
        declined it (no handler claimed it, or one read its body and found it not its own)."""
        self._emit(NotTunnelTraffic(request.remote or "?", f"{request.method} {request.path}"))
        return await self.fallback_handler.handle(request)

    async def run_session(
        self, carrier: Carrier, connection: ServerConnection, *, peer: str, transport: str
    ) -> None:
        busy = self._over_limits(peer)
        if busy is not None:
            await self._refuse(carrier, connection, peer, busy)
            return
        session = Session(
            connection,
            carrier,
            peer=peer,
            emit=self._emit,
            stats=self.stats,
            on_stream=self._upstream,
            on_flow=self._upstream.serve_flow,
        )
        session.started.set()
        self.sessions.add(session)
        self._emit(SessionUp(session.id, peer, transport, "server"))
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self._emit(SessionDown(session.id, peer, session.error))

    def _over_limits(self, peer: str) -> str | None:
        """Why one more session from ``peer`` would be too many, or None."""
        limits = self.settings.limits
        if len(self.sessions) >= limits.sessions:
            return f"the server holds {limits.sessions} sessions, all it takes"
        if sum(s.peer == peer for s in self.sessions) >= limits.sessions_per_address:
            return f"{limits.sessions_per_address} sessions from {peer} are open"
        return None

    async def _refuse(
        self, carrier: Carrier, connection: ServerConnection, peer: str, why: str
    ) -> None:
        """Tell an authenticated client, sealed, that the server is busy; then hang up.

        The Close follows the Welcome; the carrier stays open until the client hangs
        up (or a short while), so carriers that deliver by polling deliver it too.
        """
        self._emit(TunnelRejected(peer, f"busy: {why}"))
        connection.close(CloseReason.BUSY, f"busy: {why}")
        try:
            async with asyncio.timeout(REFUSE_LINGER):
                await carrier.send(connection.data_to_send())
                while await carrier.receive():
                    pass
        except (TimeoutError, FlywayError, ConnectionError, OSError):
            pass
        finally:
            await carrier.close()

    # --- running ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._site_expects(request):  # the site answers it, 100 or not (no transport sends it)
            return await self.fallback(request)
        for handler in self._handlers:
            response = await handler(request)
            if response is not None:
                return response
        return await self.fallback(request)

    def _site_expects(self, request: web.BaseRequest) -> bool:
        """``Expect: 100-continue`` on a sized body, and a fallback that takes connections.

        The site then gets the connection and decides on the 100 itself (nginx sends
        none for an answer it gives without reading the body); flyway's own clients
        never send ``Expect``. A chunked body keeps the door's 100 (its bytes as sent
        are gone once aiohttp has read them).
        """
        if "Expect" not in request.headers or request.content_length is None:
            return False
        expect = request.headers["Expect"].lower() == "100-continue"
        return expect and isinstance(self.fallback_handler, RawFallback)

    async def _expect_continue(self, request: web.Request) -> None:
        """The route's ``Expect`` handler: the door's 100, unless the site is to answer it."""
        if not self._site_expects(request):
            await expect_continue(request)

    @web.middleware
    async def _door(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Send every request to ``_handle``, even those no route matches (``*``, ``host:443``)."""
        try:
            return await self._handle(request)
        except web.HTTPException as exc:  # aiohttp's own answer (a body over client_max_size)
            return page(exc.status if exc.status in REASONS else 500, request, close=True)

    async def serve(self, started: Callable[[Address], object] | None = None) -> None:
        """Serve until cancelled; call ``started`` with the bound address.

        One middleware (``_door``) answers everything, routed or not.
        aiohttp's runner provides the app's machinery; the listening socket is ours,
        so each connection gets the guard's protocol (nginx's answers to malformed
        requests, deadlines, a connection cap; a fallback that is a ``RawFallback``
        gets the connections whose first request is unparsable). Request bodies are
        never inflated.
        """
        app = web.Application(client_max_size=8 << 20, middlewares=[self._door])
        app.router.add_route("*", "/{tail:.*}", self._handle, expect_handler=self._expect_continue)
        app.on_response_prepare.append(stamp_headers)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        async with AsyncExitStack() as stack:
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            assert runner.server is not None
            fallback = self.fallback_handler
            guard = ConnectionGuard(
                runner.server,
                self.settings.front_door,
                self._emit,
                raw=fallback if isinstance(fallback, RawFallback) else None,
                access_log=None,
                auto_decompress=False,
            )
            loop = asyncio.get_running_loop()
            try:
                listener = await loop.create_server(
                    guard.protocol, self.listen.host or None, self.listen.port, ssl=self._ssl
                )
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from exc
            guard.start()
            stack.callback(guard.close)
            stack.callback(listener.close)
            host, port = listener.sockets[0].getsockname()[:2]
            self.bound = Address(host, port)
            self.guard = guard
            for transport in self.transports.values():
                await stack.enter_async_context(transport.serve(self))
            stack.push_async_callback(self._close_sessions)
            self._emit(Listening("server", self.bound))
            if started is not None:
                started(self.bound)
            await asyncio.Event().wait()

    async def _close_sessions(self) -> None:
        await asyncio.gather(*(session.close() for session in list(self.sessions)))
