"""Handing a front-door connection to the site whole: ``RawFallback``, ``claim``, ``HandOver``.

A fallback that is a ``RawFallback`` (the reverse proxy) opens a pipe to the site
(``open_pipe``); the door's ``DoorProtocol`` then makes the pipe its socket's
protocol with every byte the client sent (``DoorProtocol.hand_over``). That
happens for a connection whose first request aiohttp cannot parse (the door's
``handle_error`` answers with a ``HandOver``), and when a handler ``claim``s a
parsed request's connection and answers with ``Claim.hand_over(pipe, head)``.
``frontdoor_guard`` has the theory of operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiohttp import web

from flyway_core.frontdoor_pages import HEADER_TOO_LARGE, ClosingPage, page_body

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

    from flyway_core.frontdoor_guard import DoorProtocol

__all__ = ["Claim", "HandOver", "RawFallback", "claim"]


@runtime_checkable
class RawFallback(Protocol):
    """A fallback that can also take whole connections (the reverse proxy to a site)."""

    async def open_pipe(self) -> asyncio.Protocol | None:
        """Connect to the site; return the protocol that carries a client connection there.

        The door makes it the client socket's protocol (``connection_made``), then feeds
        it what the client sent so far (``data_received``), and ``eof_received`` if the
        client had half-closed; when the client left meanwhile, it calls only
        ``connection_lost(None)``. None: the site cannot be reached (the door answers).
        """


class HandOver(web.StreamResponse):
    """The "answer" that gives the connection to a pipe to the site, or else the door's page.

    ``first`` goes to the pipe before anything held: an unparsable first request's
    bytes as the peer sent them, or a claimed request's head. ``code`` is the door's
    page when no pipe opens (a claim opens its pipe before, so it never gets here).
    """

    def __init__(
        self,
        protocol: DoorProtocol,
        open_pipe: Callable[[], Awaitable[asyncio.Protocol | None]],
        code: int,
        first: bytes,
    ) -> None:
        super().__init__(status=400 if code == HEADER_TOO_LARGE else code)
        self._protocol = protocol
        self._open_pipe = open_pipe
        self._code = code
        self._first = first
        self._page: ClosingPage | None = None
        self._done = False

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._done:
            return None
        self._done = True
        pipe = await self._open_pipe()
        if pipe is None:
            self._protocol._held = None
            self._page = ClosingPage(self._code, page_body(self._code))
            return await self._page.prepare(request)
        self._protocol.hand_over(pipe, self._first)
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        if self._page is not None:
            await self._page.write_eof()


class Claim:
    """A parsed request's connection, held for a hand-over to the site (see ``claim``)."""

    def __init__(self, protocol: DoorProtocol) -> None:
        self._protocol = protocol

    @property
    def tail(self) -> bytes:
        """What aiohttp read after the head of an upgrade request and did not parse."""
        return bytes(self._protocol._message_tail)

    def hand_over(self, pipe: asyncio.Protocol, head: bytes) -> web.StreamResponse:
        """Return the response that gives the connection to ``pipe``, sending ``head`` first."""
        first = head + self.tail
        self._protocol._message_tail = b""

        async def opened() -> asyncio.Protocol:
            return pipe

        return HandOver(self._protocol, opened, 502, first)

    def release(self) -> None:
        """Serve the connection over HTTP after all (the site could not be reached)."""
        self._protocol.release()


def claim(request: web.BaseRequest) -> Claim | None:
    """Hold ``request``'s connection for a hand-over; None when that cannot work.

    Only a front-door connection with nothing parsed after this request can be
    handed over. Answer with ``Claim.hand_over(...)`` or call ``Claim.release()``.
    """
    from flyway_core.frontdoor_guard import DoorProtocol  # the guard imports this module

    protocol = request.protocol
    if not isinstance(protocol, DoorProtocol) or not protocol.hold():
        return None
    return Claim(protocol)
