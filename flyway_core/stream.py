"""One tunnelled stream bridged to a local asyncio connection, with backpressure both ways.

Theory of operation: bytes from the peer are acknowledged, which is what
returns credit to the peer, only once the local writer has flushed them to the
kernel. While relaying, bytes arriving for an idle writer are written at once
(no task switch on the latency path) and acknowledged as soon as the kernel has
them; otherwise they wait in ``_inbox`` for the relay's writer loop. So a slow
local reader holds at most one window of this stream's bytes and never slows
other streams. Bytes towards the
peer are read from the local socket only while the stream has send credit; with
none, the socket is simply not read and the kernel pushes back on the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

from flyway_core.errors import StreamResetError, TargetError
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.session import Session

__all__ = ["READ_SIZE", "TunnelStream"]

READ_SIZE = 1 << 18  # largest local read per send; frames are cut to MAX_DATA by the protocol


class TunnelStream:
    """A stream of one session: ``read``/``write`` for the tunnel side, ``relay`` for sockets."""

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
        self._direct: asyncio.StreamWriter | None = None  # set while relaying
        self._unflushed = 0  # bytes written directly, not yet acknowledged
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- fed by the session as frames arrive -------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self.session.stats.received += len(data)
        writer = self._direct
        if writer is not None and not self._inbox and not writer.transport.is_closing():
            writer.write(data)
            if not self._unflushed and not writer.transport.get_write_buffer_size():
                self.consumed(len(data))  # the kernel took it all
                return
            self._unflushed += len(data)
        else:
            self._inbox.append(data)
        self._readable.set()

    def feed_eof(self) -> None:
        self._eof = True
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
        self._readable.set()
        self._credit.set()

    def feed_credit(self) -> None:
        self._credit.set()

    # --- used by listeners and the server side ---------------------------------------

    async def accepted(self) -> None:
        """Wait until the server reached the target; raise TargetError if it could not."""
        await self._accepted

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

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for credit as needed; raise StreamResetError if reset."""
        view = memoryview(data)
        while view:
            if self._reset is not None:
                raise self._reset
            credit = self.session.send_window(self.stream_id)
            if credit <= 0:
                self._credit.clear()
                await self._credit.wait()
                continue
            chunk = view[:credit]
            self.session.send_data(self.stream_id, bytes(chunk))
            self.sent += len(chunk)
            self.session.stats.sent += len(chunk)
            view = view[credit:]
            await self.session.flush()

    def end(self) -> None:
        """Finish our direction (half-close); the peer's direction stays open."""
        if self._reset is None:
            self.session.end_stream(self.stream_id)

    def reset(self, reason: int = ResetReason.CANCELLED, message: str = "") -> None:
        """Abort the stream in both directions."""
        if self._reset is None:
            self.session.reset_stream(self.stream_id, reason, message)
            self.feed_reset(reason, message)

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Move bytes both ways between the stream and a local connection until both end."""
        # Acknowledge only what the kernel took: a full socket buffer holds credit back.
        writer.transport.set_write_buffer_limits(high=0)
        self._direct = writer
        finished = False
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pump_up(reader))
                await self._pump_down(writer)  # in the body: see Session.run
            finished = True
        except* StreamResetError:
            pass
        except* (ConnectionError, OSError) as group:
            self.error = self.error or _describe(group.exceptions[0])
            self.reset(ResetReason.CANCELLED, self.error)
        finally:
            self._direct = None
            if finished:
                writer.close()  # both directions ended: a normal close, flushing what is left
            else:
                writer.transport.abort()  # reset, failed or cancelled: do not wait on a peer
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _pump_up(self, reader: asyncio.StreamReader) -> None:
        while True:
            credit = self.session.send_window(self.stream_id)
            if self._reset is not None:
                raise self._reset
            if credit <= 0:
                self._credit.clear()
                await self._credit.wait()
                continue
            data = await reader.read(min(credit, READ_SIZE))
            if not data:
                self.end()
                return
            await self.write(data)

    async def _pump_down(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if self._unflushed:  # feed() wrote these; ack once the kernel has them
                await writer.drain()
                flushed, self._unflushed = self._unflushed, 0
                self.consumed(flushed)
            elif self._inbox:
                data = self._take()
                writer.write(data)
                await writer.drain()
                self.consumed(len(data))
            elif self._reset is not None:
                raise self._reset
            elif self._eof:
                break
            else:
                self._readable.clear()
                await self._readable.wait()
        if writer.can_write_eof():
            writer.write_eof()


def _describe(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
