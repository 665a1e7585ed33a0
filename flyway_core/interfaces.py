"""The Protocols a plugin implements (Transport, Carrier, Listener, Fallback, Dialer) or uses.

Hooks in :mod:`flyway_core.hookspecs` hand these objects to the core; the
objects do the asynchronous work. Optional members have defaults here: subclass
the Protocol (``class MyCarrier(Carrier)``) to inherit them, and override only
what differs. The core reads every member directly, never with ``getattr``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from aiohttp import web

    from flyway_core.address import Address, ServerURL
    from flyway_core.protocol import ServerConnection
    from flyway_core.settings import Settings

__all__ = [
    "Carrier",
    "Dialer",
    "Fallback",
    "Flow",
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
    """A reliable, ordered, duplex byte pipe between one client and the server.

    ``keepalive`` (default True) says the session must watch the peer's liveness
    itself: keepalive pings and an idle timeout. A carrier that notices a dead
    peer on its own (HTTP long polls do) sets it False, so an idle tunnel is quiet.
    """

    keepalive: bool = True

    async def send(self, data: bytes) -> None:
        """Send bytes; may wait while the network is slow (that is the backpressure)."""

    def send_nowait(self, data: bytes) -> bool:
        """Take ``data`` at once, without a task switch, if the carrier can; never raise.

        True means taken. False (the default) means "use ``send()``", which the session
        then does. The session calls this for every small write, so keep it cheap.
        """
        return False

    async def receive(self) -> bytes:
        """Return the next bytes from the peer; ``b""`` once the peer has closed."""

    async def close(self) -> None:
        """Close the pipe; pending bytes may be lost. Safe to call twice."""


class FrontDoor(Protocol):
    """What the server's front door offers a transport's server side.

    ``bound`` is the address the server's port is bound to (the real port when
    ``:0`` was asked); it is set before any transport starts serving, so a
    transport with a socket of its own (UDP) can bind the same port number.
    """

    settings: Settings
    bound: Address

    def add_handler(self, handler: RequestHandler) -> None:
        """Offer every HTTP request to ``handler``; returning None passes it on."""

    def accept(self, hello: bytes, peer: str) -> ServerConnection | None:
        """Check a client's first bytes; None means rejected (already reported).

        ``hello`` must be the client's whole hello and nothing else (``ClientConnection.
        hello()``): a prefix, a hello that fails in any way, or bytes after it are rejected.
        Answer a rejected request exactly as an unclaimed one (``fallback``).
        """

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """Answer ``request`` as the site the server fronts (what a prober sees).

        A handler that had to read a request's body to know it is not its own answers
        with this, not None: aiohttp keeps the bytes it read, so the fallback's
        ``await request.read()`` still sees the body whole (streaming ``request.content``
        would not). A handler that can decide from the head returns None unread.
        """

    async def run_session(
        self, carrier: Carrier, connection: ServerConnection, *, peer: str, transport: str
    ) -> None:
        """Run an accepted session over ``carrier`` until it ends."""


@runtime_checkable
class Transport(Protocol):
    """A way to carry sealed records: the client side dials, the server side serves.

    ``flag`` is the goflyway flag that selects it (``-w``) or None. ``client_only``
    (default False) marks a transport that only dials (one that picks among
    others, like ``--auto``): the server neither serves nor lists it.
    """

    name: str  # the key users pick it by ("ws"); unique among installed transports
    flag: str | None = None
    client_only: bool = False

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> Carrier:
        """Connect to ``server``, presenting ``hello`` (the client's first bytes).

        Raise :class:`~flyway_core.errors.DialError` when the server cannot be
        reached or does not accept the tunnel.
        """

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        """Return a context manager that serves this transport while it is held open."""

    def carried_by(self) -> str:
        """Name the transport the last dial used, for reports (``ws (auto)``); default ``name``."""
        return self.name


class Stream(Protocol):
    """One tunnelled connection, as a listener sees it.

    Use it with ``relay`` (hand over a local connection), or read and write it
    yourself (a proxy's handshake, an HTTP proxy answering a request), or both:
    first talk, then relay. Flow control holds either way: bytes not read are not
    acknowledged, so the peer stops after one window.
    """

    stream_id: int
    target: Address
    bound: Address | None
    """After ``accepted()``: the server's local address of its connection to the target
    (what the target sees as its peer), or None when the server did not report it."""

    async def accepted(self) -> None:
        """Wait until the server reached the target; raise TargetError if it could not."""

    async def read(self) -> bytes:
        """Return the next bytes from the target; ``b""`` once it finished sending.

        Raise StreamResetError if the stream was reset.
        """

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the target, waiting for credit; raise StreamResetError if reset."""

    def end(self) -> None:
        """Finish our direction (half-close); the target's direction stays open."""

    def reset(self, reason: int = ResetReason.CANCELLED, message: str = "") -> None:
        """Abort the stream both ways."""

    async def relay(
        self, transport: asyncio.BaseTransport, *, already_read: bytes = b"", at_eof: bool = False
    ) -> None:
        """Relay a local connection both ways until both directions end, then close it.

        ``already_read`` is what you read from the connection before (it goes first);
        ``flyway_core.take_buffered(reader)`` gives what an asyncio StreamReader still
        holds. ``at_eof=True`` says the connection's EOF was already read
        (``reader.at_eof()``), so the target is told at once.
        """


class Flow(Protocol):
    """One datagram flow (a SOCKS5 UDP association's way to the server), as a listener sees it.

    Datagrams never wait and may be lost, as UDP datagrams may: ``send`` returns False
    for one dropped over the session's datagram budget, and ``dropped`` counts them.
    """

    stream_id: int
    dropped: int
    on_datagram: Callable[[Address, bytes], object] | None
    """Called with (source, bytes) for each datagram from the server; set it before sending."""

    async def accepted(self) -> None:
        """Wait until the server took the flow; raise TargetError if it refused it."""

    def send(self, address: Address, data: bytes) -> bool:
        """Send one datagram to ``address`` (an IP literal or a name the server resolves)."""

    async def wait_closed(self) -> None:
        """Return once the flow is over (the server ended it, or the session did)."""

    def close(self, message: str = "") -> None:
        """End the flow. Idempotent."""


class Tunnel(Protocol):
    """The client's way to the server, as a listener sees it."""

    def open_flow(self, *, origin: str = "") -> AbstractAsyncContextManager[Flow]:
        """Open a datagram flow on the live session; raise TunnelUnavailable when down,
        DatagramsUnsupported when the server speaks no flows."""

    def open_stream(
        self, target: Address, *, origin: str = ""
    ) -> AbstractAsyncContextManager[Stream]:
        """Open a stream to ``target`` (no round trip once a session is up; while a dial
        is under way it waits for it, up to 10 s); TunnelUnavailable when a dial failed."""


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
