"""One local TCP connection bridged to one tunnel stream, in transport callbacks.

Theory of operation: a ``LocalLink`` is the asyncio protocol of the local socket
(the connection a ``-L`` listener accepted, or the one the server dialed to the
target). It moves bytes without a task of its own, so a small message costs no
task switch on its way through:

- Upward, ``data_received`` hands the bytes to the stream, which queues them as
  Data frames and asks the session to send at once (``Session.send_soon``).
  Bytes beyond the stream's send credit are held and the socket is no longer
  read (``pause_reading``) until the peer returns credit; the kernel then
  pushes back on the local application.
- Downward, bytes from the peer are written to the transport as the session
  dispatches them. The transport's write buffer limit is 0, so
  ``pause_writing``/``resume_writing`` say exactly when the kernel has taken
  everything, and only then are the bytes acknowledged (credit returned to the
  peer): a local reader that stops reading holds at most one window.

A listener hands a local connection over with ``TunnelStream.relay(transport,
already_read=...)``: the link becomes the transport's protocol (``take_over``),
and the bytes the listener read during its own handshake go first. A link
knows its stream only as a ``LinkedStream``.

A link is finished when both directions ended (our End sent, the peer's End
passed on as a write EOF); a reset, a failed socket or a cancelled relay ends it
early, and the caller then aborts the socket rather than wait on a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

from flyway_core.address import Address
from flyway_core.errors import describe_error
from flyway_core.protocol import ResetReason

__all__ = ["HELD_LIMIT", "LinkedStream", "LocalLink", "take_buffered"]

HELD_LIMIT = 1 << 18  # bytes read before a stream is attached; reading pauses beyond this


class LinkedStream(Protocol):
    """What a link needs from the stream it relays (``TunnelStream``)."""

    def attach(self, local: LocalLink) -> None:
        """Hand over what arrived so far, then everything as it comes."""

    def detach(self) -> None:
        """Stop handing bytes to the link."""

    def send_now(self, data: bytes) -> int:
        """Send what the credit allows now; return how many bytes went."""

    def consumed(self, n: int) -> None:
        """Return ``n`` bytes of credit to the peer."""

    def end(self) -> None:
        """Finish our direction."""

    def reset(self, reason: int = ..., message: str = "") -> None:
        """Abort the stream both ways."""


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Return (and remove) what ``reader`` holds unread, for ``relay(..., already_read=)``.

    A listener that ran its handshake on asyncio streams hands the rest over with
    ``await stream.relay(writer.transport, already_read=take_buffered(reader),
    at_eof=reader.at_eof())``: the EOF, if the client already sent it, went to the reader.
    """
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]  # no public way to take it
    data = bytes(buffer)
    buffer.clear()
    return data


class LocalLink(asyncio.Protocol):
    """The protocol of a local socket whose bytes ride one tunnel stream."""

    def __init__(self, on_connect: Callable[[LocalLink], object] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.error: str | None = None
        self._on_connect = on_connect
        self._stream: LinkedStream | None = None
        self._held: list[bytes] = []  # read but not sent: no stream yet, or no credit
        self._unflushed = 0  # written to the transport, not yet acknowledged
        self._local_eof = False  # the local side finished sending
        self._ended = False  # End sent to the peer
        self._peer_eof = False  # the peer's End passed on
        self._done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @classmethod
    def take_over(
        cls, transport: asyncio.BaseTransport, already_read: bytes = b"", *, at_eof: bool = False
    ) -> LocalLink:
        """Return the link relaying ``transport``, making one its protocol if needed.

        What the previous protocol saw cannot reach the new one: ``already_read`` is what
        it read, and ``at_eof`` says the local side had finished sending (its EOF went to
        the previous protocol). A transport already closing is relayed as a failure.
        """
        link = transport.get_protocol()
        if not isinstance(link, LocalLink) or link.transport is not transport or link._stream:
            link = cls()
            transport.set_protocol(link)
            link.connection_made(transport)
        if already_read:
            link._held.insert(0, already_read)
        if at_eof:
            link._local_eof = True
        return link

    @property
    def peer(self) -> str:
        """``host:port`` of the local socket's far end, or ``local``."""
        address = self.transport.get_extra_info("peername") if self.transport else None
        return str(Address(*address[:2])) if address else "local"

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=0)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a socket already gone (reset): run() sees it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._held or self._stream is None:
            self._held.append(data)
            if self._stream is None and sum(map(len, self._held)) > HELD_LIMIT:
                self._pause_reading()
            return
        self._send(data)

    def eof_received(self) -> bool:
        self._local_eof = True
        self._end_if_sent()
        return True  # keep our sending side open: the peer may still answer (half-close)

    def pause_writing(self) -> None:
        pass  # bytes stay unacknowledged until resume_writing

    def resume_writing(self) -> None:
        # The kernel took everything we wrote: those bytes have left our hands.
        if self._unflushed and self._stream is not None:
            flushed, self._unflushed = self._unflushed, 0
            self._stream.consumed(flushed)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if self._stream is not None:
            self.error = self.error or (describe_error(exc) if exc else "the local side closed")
            self._stream.reset(ResetReason.CANCELLED, self.error)
        self._finish(False)

    # --- driven by the stream ----------------------------------------------------------

    async def run(self, stream: LinkedStream) -> None:
        """Relay between the socket and ``stream`` until both directions end or one fails."""
        transport = self.transport
        if transport is None:
            raise RuntimeError("relay before the connection was made")
        self._stream = stream
        finished = False
        try:
            if transport.is_closing():  # lost before the relay began (a reset handshake)
                self.error = "the local side closed"
                stream.reset(ResetReason.CANCELLED, self.error)
                return
            stream.attach(self)  # what the peer sent before now is delivered here
            held, self._held = b"".join(self._held), []
            if held and not self._done.done():
                self._send(held)
            if not self._held:
                self._resume_reading()
            self._end_if_sent()
            finished = await self._done
        finally:
            stream.detach()
            if finished:
                transport.close()  # both directions ended: a normal close, flushing what is left
            else:
                transport.abort()  # reset, failed or cancelled: do not wait on a peer

    def deliver(self, data: bytes) -> None:
        """Write bytes from the peer; acknowledge them once the kernel has taken them."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._stream is None:
            return
        transport.write(data)
        if not self._unflushed and not transport.get_write_buffer_size():
            self._stream.consumed(len(data))  # the kernel took it all
        else:
            self._unflushed += len(data)

    def deliver_eof(self) -> None:
        """The peer finished its direction: pass the half-close on."""
        self._peer_eof = True
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()  # sent once the buffered bytes are out
        self._finish_if_both_ended()

    def credit_available(self) -> None:
        """The peer returned credit: send what was held back."""
        if not self._held or self._stream is None:
            return
        held, self._held = b"".join(self._held), []
        self._send(held)
        if not self._held:
            self._resume_reading()
            self._end_if_sent()

    def abort(self) -> None:
        """The stream was reset: stop at once."""
        self._finish(False)

    # --- inside -------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        assert self._stream is not None
        taken = self._stream.send_now(data)
        if taken < len(data):
            self._held.append(data[taken:])
            self._pause_reading()

    def _end_if_sent(self) -> None:
        if self._local_eof and not self._held and not self._ended and self._stream is not None:
            self._ended = True
            self._stream.end()
            self._finish_if_both_ended()

    def _finish_if_both_ended(self) -> None:
        if self._ended and self._peer_eof:
            self._finish(True)

    def _finish(self, finished: bool) -> None:
        if not self._done.done():
            self._done.set_result(finished)

    def _pause_reading(self) -> None:
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()
