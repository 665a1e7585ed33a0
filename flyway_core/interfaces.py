"""The Protocols a plugin implements (Transport, Carrier, Listener, Fallback, Dialer) or uses.

Hooks in :mod:`flyway_core.hookspecs` hand these objects to the core; the
objects do the asynchronous work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiohttp import web

    from flyway_core.address import Address, ServerURL
    from flyway_core.link import LocalLink
    from flyway_core.protocol import ServerConnection
    from flyway_core.settings import Settings

__all__ = [
    "Carrier",
    "Dialer",
    "Fallback",
    "FrontDoor",
    "Listener",
    "RequestHandler",
    "Stream",
    "Transport",
    "Tunnel",
]

RequestHandler = Callable[["web.Request"], Awaitable["web.StreamResponse | None"]]


@runtime_checkable
class Carrier(Protocol):
    """A reliable, ordered, duplex byte pipe between one client and the server."""

    async def send(self, data: bytes) -> None:
        """Send bytes; may wait while the network is slow (that is the backpressure)."""

    # Optional: ``def send_nowait(self, data: bytes) -> bool`` takes bytes at once, without
    # a task switch, when the carrier can (True), and never raises; False means "use send()".
    # The session calls it for every small write, so it should be cheap.

    async def receive(self) -> bytes:
        """Return the next bytes from the peer; ``b""`` once the peer has closed."""

    async def close(self) -> None:
        """Close the pipe; pending bytes may be lost. Safe to call twice."""


class FrontDoor(Protocol):
    """What the server's front door offers a transport's server side."""

    settings: Settings

    def add_handler(self, handler: RequestHandler) -> None:
        """Offer every HTTP request to ``handler``; returning None passes it on."""

    def accept(self, hello: bytes, peer: str, *, keepalive: bool = True) -> ServerConnection | None:
        """Check a client's first bytes; None means rejected (already reported).

        ``keepalive=False`` is for carriers that notice a dead peer themselves:
        the session then runs no idle timeout of its own.
        """

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """Answer ``request`` as the site the server fronts (what a prober sees)."""

    async def run_session(
        self, carrier: Carrier, connection: ServerConnection, *, peer: str, transport: str
    ) -> None:
        """Run an accepted session over ``carrier`` until it ends."""


@runtime_checkable
class Transport(Protocol):
    """A way to carry sealed records: the client side dials, the server side serves.

    An optional attribute ``keepalive = False`` says the carrier notices a dead
    peer itself (HTTP long polls do): the session then sends no keepalive pings
    and runs no idle timeout, so an idle tunnel stays quiet. An optional
    ``client_only = True`` marks a transport that only dials (one that picks
    among others, like ``--auto``): the server neither serves nor lists it.
    """

    name: str  # the key users pick it by ("ws"); unique among installed transports
    flag: str | None  # the goflyway flag that selects it ("-w"), or None

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> Carrier:
        """Connect to ``server``, presenting ``hello`` (the client's first bytes).

        Raise :class:`~flyway_core.errors.DialError` when the server cannot be
        reached or does not accept the tunnel.
        """

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        """Return a context manager that serves this transport while it is held open."""


class Stream(Protocol):
    """One tunnelled connection, as a listener sees it."""

    stream_id: int
    target: Address

    async def accepted(self) -> None:
        """Wait until the server reached the target; raise TargetError if it could not."""

    async def relay(self, link: LocalLink) -> None:
        """Move bytes both ways between the stream and a local socket until both end."""


class Tunnel(Protocol):
    """The client's way to the server, as a listener sees it."""

    def open_stream(
        self, target: Address, *, origin: str = ""
    ) -> AbstractAsyncContextManager[Stream]:
        """Open a stream to ``target`` (no round trip); raise TunnelUnavailable when down."""


@runtime_checkable
class Listener(Protocol):
    """A local entry point whose connections become tunnel streams."""

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        """Accept local connections until cancelled; call ``started`` once bound."""


@runtime_checkable
class Fallback(Protocol):
    """Answers HTTP requests that are not tunnel traffic."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request as an ordinary web server would."""


@runtime_checkable
class Dialer(Protocol):
    """How the server reaches a stream's target."""

    async def connect(self, target: Address, protocol: asyncio.Protocol) -> None:
        """Connect to ``target`` with ``protocol`` as the connection's protocol.

        As ``loop.create_connection(lambda: protocol, ...)`` does; a dialer that
        must talk to a proxy first may speak through its own protocol, then hand
        the transport over with ``transport.set_protocol(protocol)`` and
        ``protocol.connection_made(transport)``. Raise
        :class:`~flyway_core.errors.TargetError` on failure.
        """
