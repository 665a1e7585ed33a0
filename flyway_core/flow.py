"""One datagram flow of a session (feature DATAGRAM_FLOWS): addressed datagrams, droppable.

A flow is what a SOCKS5 UDP association rides on. Each end has a ``TunnelFlow``;
its user sets ``on_datagram`` to take what arrives, calls ``send`` for what
leaves, and ``close`` when the association is over. Datagrams never wait: one
that would go over the session's datagram budget, or arrives before anyone
takes them, is dropped and counted (``dropped``), as a UDP datagram may be. So
a flow holds no queue of its own, and a flood of datagrams stalls nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from flyway_core.errors import StreamResetError, TargetError
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.stats import Stats

__all__ = ["DATAGRAM_BUDGET", "FlowSession", "TunnelFlow"]

log = logging.getLogger(__name__)
DATAGRAM_BUDGET = 256 << 10  # datagram bytes an end keeps waiting (per session, per socket)


class FlowSession(Protocol):
    """What a flow needs of its session."""

    @property
    def stats(self) -> Stats: ...

    def send_datagram(self, stream_id: int, address: Address, data: bytes) -> bool:
        """Queue one datagram; False if it was dropped (over the budget, or too large)."""

    def reset_stream(self, stream_id: int, reason: int, message: str) -> None:
        """Queue a Reset of the flow."""


class TunnelFlow:
    """A flow of one session: ``send`` datagrams, receive them through ``on_datagram``."""

    def __init__(self, session: FlowSession, stream_id: int, origin: str) -> None:
        self.session = session
        self.stream_id = stream_id
        self.origin = origin
        self.started = time.monotonic()
        self.sent = 0  # datagrams queued for the peer
        self.received = 0  # datagrams from the peer, handed to on_datagram
        self.dropped = 0  # datagrams lost here: over the budget, too large, or nobody to take them
        self.error: str | None = None
        self.bound: Address | None = None  # the server's address toward the targets, if told
        self.on_datagram: Callable[[Address, bytes], object] | None = None
        self._reset: StreamResetError | None = None
        self._over = asyncio.Event()
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<TunnelFlow {self.stream_id} sent={self.sent} received={self.received}>"

    # --- fed by the session as frames arrive -------------------------------------------

    def feed_datagram(self, address: Address, data: bytes) -> None:
        handler = self.on_datagram
        if handler is None:
            self.dropped += 1
            return
        self.received += 1
        self.session.stats.received += len(data)
        try:
            handler(address, data)
        except Exception as exc:  # one flow's bug ends that flow, not the session
            log.warning("flow %d: its datagram handler failed: %r", self.stream_id, exc)
            self.close(f"internal error ({type(exc).__name__})")

    def feed_accept(self, bound: Address | None = None) -> None:
        if not self._accepted.done():
            self.bound = bound
            self._accepted.set_result(None)

    def feed_eof(self) -> None:
        """The peer ended its half: nothing more comes, so the flow is over for us too."""
        self.feed_reset(ResetReason.CANCELLED, "the peer ended the flow")

    def feed_reset(self, reason: int, message: str) -> None:
        if self._reset is not None:
            return
        text = message or ResetReason(reason).describe()
        self._reset = StreamResetError(text, reason=reason)
        self.error = self.error or text
        if not self._accepted.done():
            self._accepted.set_exception(TargetError(text, reason=reason))
            self._accepted.exception()  # mark retrieved: nobody may be waiting
        self.on_datagram = None
        self._over.set()

    # --- the user's side ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the flow is over (either end reset it, or the session ended)."""
        return self._reset is not None

    async def accepted(self) -> None:
        """Wait until the server took the flow; raise TargetError if it refused it."""
        await self._accepted

    async def wait_closed(self) -> None:
        """Return once the flow is over."""
        await self._over.wait()

    def send(self, address: Address, data: bytes) -> bool:
        """Send one datagram to (client) or from (server) ``address``; False if dropped."""
        if self._reset is not None:
            return False
        if not self.session.send_datagram(self.stream_id, address, data):
            self.dropped += 1
            return False
        self.sent += 1
        self.session.stats.sent += len(data)
        return True

    def close(self, message: str = "") -> None:
        """End the flow (a Reset, CANCELLED, to the peer). Idempotent."""
        if self._reset is None:
            self.session.reset_stream(self.stream_id, ResetReason.CANCELLED, message)
            self.feed_reset(ResetReason.CANCELLED, message or "flow closed")
