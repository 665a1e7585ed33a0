"""One tunnelled stream: what the session feeds it, and the two ways to use it.

A stream is used either through a :class:`~flyway_core.link.LocalLink` (``relay``),
which is how listeners and the server bridge real sockets, in callbacks and with
backpressure both ways; or directly, with ``read``/``consumed`` and ``write``,
for code that produces or consumes the bytes itself. Bytes that arrive before a
link is attached wait in ``_inbox`` and are handed to the link when it attaches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from flyway_core.errors import StreamResetError, TargetError
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.link import LocalLink
    from flyway_core.session import Session

__all__ = ["TunnelStream"]


class TunnelStream:
    """A stream of one session: ``relay`` for sockets, ``read``/``write`` for code."""

    def __init__(self, session: Session, stream_id: int, target: Address, origin: str) -> None:
        self.session = session
        self.stream_id = stream_id
        self.target = target
        self.origin = origin
        self.sent = 0
        self.received = 0
        self.started = time.monotonic()
        self.error: str | None = None
        self._inbox: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._eof = False
        self._reset: StreamResetError | None = None
        self._credit = asyncio.Event()
        self._link: LocalLink | None = None  # set while relaying
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- fed by the session as frames arrive -------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self.session.stats.received += len(data)
        if self._link is not None:
            self._link.deliver(data)
            return
        self._inbox.append(data)
        self._readable.set()

    def feed_eof(self) -> None:
        self._eof = True
        if self._link is not None:
            self._link.deliver_eof()
        self._readable.set()

    def feed_accept(self) -> None:
        if not self._accepted.done():
            self._accepted.set_result(None)

    def feed_reset(self, reason: int, message: str) -> None:
        text = message or ResetReason(reason).describe()
        self._reset = StreamResetError(text, reason=reason)
        self.error = self.error or text
        if not self._accepted.done():
            self._accepted.set_exception(TargetError(text, reason=reason))
            self._accepted.exception()  # mark retrieved: nobody may be waiting
        if self._link is not None:
            self._link.abort()
        self._readable.set()
        self._credit.set()

    def feed_credit(self) -> None:
        self._credit.set()
        if self._link is not None:
            self._link.credit_available()

    # --- used by listeners and the server side ---------------------------------------

    async def accepted(self) -> None:
        """Wait until the server reached the target; raise TargetError if it could not."""
        await self._accepted

    async def relay(self, link: LocalLink) -> None:
        """Move bytes both ways between the stream and a local socket until both end."""
        await link.run(self)

    def attach(self, link: LocalLink) -> None:
        """Hand the stream to ``link``: what already arrived, then everything as it comes."""
        self._link = link
        if self._inbox:
            link.deliver(self._take())
        if self._reset is not None:
            link.abort()
        elif self._eof:
            link.deliver_eof()

    def detach(self) -> None:
        self._link = None

    async def read(self) -> bytes:
        """Return what the peer sent so far (not yet acknowledged); ``b""`` at its end."""
        while not self._inbox:
            if self._reset is not None:
                raise self._reset
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        return self._take()

    def _take(self) -> bytes:
        if len(self._inbox) == 1:
            return self._inbox.popleft()
        data = b"".join(self._inbox)
        self._inbox.clear()
        return data

    def consumed(self, n: int) -> None:
        """Return ``n`` bytes of credit to the peer: they have left our hands."""
        self.session.acknowledge(self.stream_id, n)

    def send_now(self, data: bytes) -> int:
        """Send as much of ``data`` as the credit allows, now; return how many bytes went."""
        credit = 0 if self._reset is not None else self.session.send_window(self.stream_id)
        taken = min(credit, len(data))
        if taken > 0:
            self.session.send_data(self.stream_id, data if taken == len(data) else data[:taken])
            self.sent += taken
            self.session.stats.sent += taken
            self.session.send_soon()
        return max(taken, 0)

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for credit as needed; raise StreamResetError if reset."""
        while data:
            if self._reset is not None:
                raise self._reset
            self._credit.clear()
            taken = self.send_now(data)
            if not taken:
                await self._credit.wait()
            data = data[taken:]

    def end(self) -> None:
        """Finish our direction (half-close); the peer's direction stays open."""
        if self._reset is None:
            self.session.end_stream(self.stream_id)

    def reset(self, reason: int = ResetReason.CANCELLED, message: str = "") -> None:
        """Abort the stream in both directions."""
        if self._reset is None:
            self.session.reset_stream(self.stream_id, reason, message)
            self.feed_reset(reason, message)
