"""One tunnelled stream: what the session feeds it, and the two ways to use it.

A stream is used either through ``relay``, which hands a local connection (an
asyncio transport) to a :class:`~flyway_core.link.LocalLink` that moves bytes
both ways in callbacks, with backpressure both ways; or directly, with
``read``/``write``/``end``/``reset``, for code that produces or consumes the
bytes itself (a proxy's handshake, an HTTP proxy answering a request). Both
keep flow control: bytes are acknowledged to the peer only once they have left
our hands, so a reader that stops reading holds at most one window.

The stream knows its session and its local side only through two small
Protocols, ``StreamSession`` and ``LocalSide`` (the link, in turn, knows the
stream only as ``link.LinkedStream``), so no two of these modules import each
other. Bytes that arrive before a local side attaches wait in ``_inbox`` and are
handed over when it attaches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from flyway_core.errors import StreamResetError, TargetError
from flyway_core.link import LocalLink
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.stats import Stats

__all__ = ["LocalSide", "StreamSession", "TunnelStream"]


class StreamSession(Protocol):
    """What a stream needs from the session it rides on."""

    @property
    def stats(self) -> Stats: ...

    def send_window(self, stream_id: int) -> int:
        """Return how many bytes the stream may send now."""

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` (within the send window); ``send_soon`` sends it."""

    def send_soon(self) -> None:
        """Send what is queued, at once if the carrier takes it."""

    def end_stream(self, stream_id: int) -> None:
        """Finish our direction of the stream."""

    def reset_stream(self, stream_id: int, reason: int, message: str) -> None:
        """Abort the stream both ways."""

    def acknowledge(self, stream_id: int, n: int) -> None:
        """Return ``n`` received bytes of credit to the peer."""


class LocalSide(Protocol):
    """What a stream pushes into the local connection it is relayed to."""

    def deliver(self, data: bytes) -> None:
        """Write the peer's bytes; acknowledge them (``stream.consumed``) once they left."""

    def deliver_eof(self) -> None:
        """The peer finished its direction: pass the half-close on."""

    def credit_available(self) -> None:
        """The peer returned credit: send what was held back."""

    def abort(self) -> None:
        """The stream was reset: stop at once."""


class TunnelStream:
    """A stream of one session: ``relay`` for local connections, ``read``/``write`` for code."""

    def __init__(
        self, session: StreamSession, stream_id: int, target: Address, origin: str
    ) -> None:
        self.session = session
        self.stream_id = stream_id
        self.target = target
        self.origin = origin
        self.sent = 0
        self.received = 0
        self.started = time.monotonic()
        self.error: str | None = None
        self.bound: Address | None = None  # the server's local address toward the target
        self._inbox: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._eof = False
        self._ended = False  # our direction is finished (end() was called)
        self._reset: StreamResetError | None = None
        self._credit = asyncio.Event()
        self._local: LocalSide | None = None  # set while relaying
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_reset: Callable[[], object] | None = None  # called once when the stream is reset

    # --- fed by the session as frames arrive -------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self.session.stats.received += len(data)
        if self._local is not None:
            self._local.deliver(data)
            return
        self._inbox.append(data)
        self._readable.set()

    def feed_eof(self) -> None:
        self._eof = True
        if self._local is not None:
            self._local.deliver_eof()
        self._readable.set()

    def feed_accept(self, bound: Address | None = None) -> None:
        if not self._accepted.done():
            self.bound = bound
            self._accepted.set_result(None)

    def feed_reset(self, reason: int, message: str) -> None:
        text = message or ResetReason(reason).describe()
        self._reset = StreamResetError(text, reason=reason)
        self.error = self.error or text
        if not self._accepted.done():
            self._accepted.set_exception(TargetError(text, reason=reason))
            self._accepted.exception()  # mark retrieved: nobody may be waiting
        if self._local is not None:
            self._local.abort()
        self._readable.set()
        self._credit.set()
        if self.on_reset is not None:
            on_reset, self.on_reset = self.on_reset, None
            on_reset()

    def feed_credit(self) -> None:
        self._credit.set()
        if self._local is not None:
            self._local.credit_available()

    # --- the listener's side (interfaces.Stream) ---------------------------------------

    async def accepted(self) -> None:
        """Wait until the server reached the target; raise TargetError if it could not."""
        await self._accepted

    async def relay(
        self, transport: asyncio.BaseTransport, *, already_read: bytes = b"", at_eof: bool = False
    ) -> None:
        """Move bytes both ways between the stream and a local connection until both end.

        ``transport`` is the local connection; the relay takes it over (it becomes the
        transport of a ``LocalLink``) and closes it at the end. ``already_read`` is what
        the caller read from it before (a proxy's handshake leftovers): it goes first.
        ``at_eof`` says the local side already finished sending (its EOF was read before).
        """
        await LocalLink.take_over(transport, already_read, at_eof=at_eof).run(self)

    async def read(self) -> bytes:
        """Return what the peer sent so far; ``b""`` at its end. Raise StreamResetError if reset.

        The bytes returned are acknowledged: the peer may send that many more.
        """
        data = await self._read()
        if data:
            self.consumed(len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for credit as needed; raise StreamResetError if reset."""
        if self._ended and data:
            raise StreamResetError("write after end()", reason=ResetReason.CANCELLED)
        while data:
            if self._reset is not None:
                raise self._reset
            self._credit.clear()
            taken = self.send_now(data)
            if not taken:
                await self._credit.wait()
            data = data[taken:]

    def end(self) -> None:
        """Finish our direction (half-close); the peer's direction stays open. Idempotent."""
        if self._reset is None and not self._ended:
            self._ended = True
            self.session.end_stream(self.stream_id)

    @property
    def is_reset(self) -> bool:
        """Whether the stream was reset (by either end)."""
        return self._reset is not None

    def reset(self, reason: int = ResetReason.CANCELLED, message: str = "") -> None:
        """Abort the stream in both directions."""
        if self._reset is None:
            self.session.reset_stream(self.stream_id, reason, message)
            self.feed_reset(reason, message)

    # --- the local side's hooks (LocalLink) -------------------------------------------

    def attach(self, local: LocalSide) -> None:
        """Hand the stream to ``local``: what already arrived, then everything as it comes."""
        self._local = local
        if self._inbox:
            local.deliver(self._take())
        if self._reset is not None:
            local.abort()
        elif self._eof:
            local.deliver_eof()

    def detach(self) -> None:
        self._local = None

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

    # --- inside ------------------------------------------------------------------------

    async def _read(self) -> bytes:
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
