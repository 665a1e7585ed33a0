"""Two TCP connections joined end to end: bytes, half-closes and the way each ends (FIN or RST).

A ``Splice`` carries a client connection that the front door handed over to the
site, byte for byte, as a TCP relay does (Xray's fallbacks, HAProxy in TCP mode).
What one side sends the other gets; an EOF becomes a ``write_eof`` (a close, where the
transport cannot half-close: TLS); a connection whose EOF came both ways is closed, so
a splice that ends with two FINs ends (``on_end``) as one that is closed; a side that
closes normally is followed by a normal close of the other (FIN), a side that was
reset by an abortive close of the other (RST, ``SO_LINGER`` 0), so a prober sees
the site's own way of hanging up. Each direction is flow-controlled: a side whose
writes back up stops the other from being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import cast

__all__ = ["PipeEnd", "Splice", "reset"]

_PENDING_LIMIT = 1 << 20  # bytes kept for a side that is not connected yet


def reset(transport: asyncio.Transport) -> None:
    """Close ``transport`` with an RST, as the kernel does for a socket with SO_LINGER 0."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class PipeEnd(asyncio.Protocol):
    """One side of a ``Splice``: the protocol of one of its two sockets."""

    def __init__(self, splice: Splice) -> None:
        self.splice = splice
        self.transport: asyncio.Transport | None = None
        self.peer: PipeEnd | None = None
        self._pending = bytearray()
        self._eof_pending = False
        self.eof_in = False  # this side sent its EOF
        self.eof_out = False  # this side was sent the other's EOF
        self.gone = False

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is no subclass of asyncio.Transport).
        self.transport = cast("asyncio.Transport", transport)
        transport = self.transport
        if self._pending:
            transport.write(bytes(self._pending))
            self._pending.clear()
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.resume_reading()
        if self._eof_pending:
            self.send_eof()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.send(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        if self.peer is not None:
            self.peer.send_eof()
        self._close_if_done()
        return True  # keep our direction open: the other side may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.transport = None
        if self.peer is not None:
            self.peer.finish(abort=isinstance(exc, ConnectionResetError))
        self.splice.ended(self)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # --- what the other side asks of this one ---------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            return
        if self.gone:
            return
        self._pending += data
        if len(self._pending) > _PENDING_LIMIT and self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def send_eof(self) -> None:
        if self.transport is None:
            self._eof_pending = True
            return
        self.eof_out = True
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._close_if_done()
        else:  # TLS cannot half-close: the EOF becomes a close (after what is buffered)
            self.transport.close()

    def _close_if_done(self) -> None:
        """Both directions of this connection are over: close it (a normal close, FIN)."""
        if self.eof_in and self.eof_out and self.transport is not None:
            self.transport.close()

    def finish(self, *, abort: bool) -> None:
        if self.transport is None:
            self.gone = True
            return
        if abort:
            reset(self.transport)
        else:
            self.transport.close()


class Splice:
    """A client connection joined to a connection to the site; ``client`` is the door's pipe.

    ``on_end`` is called once, when both connections are gone.
    """

    def __init__(self, on_end: Callable[[], object] = lambda: None) -> None:
        self.client = PipeEnd(self)
        self.upstream = PipeEnd(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._on_end: Callable[[], object] | None = on_end

    def ended(self, side: PipeEnd) -> None:
        if self.client.gone and self.upstream.gone and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
