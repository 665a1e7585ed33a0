"""UDP sockets for KCP: big buffers, non-blocking, read in batches from one reader callback.

The hot path is Python's work per datagram, so a wake-up reads every datagram waiting (up
to ``BATCH``) before the conversations it touched flush once each: one callback per batch,
not one per datagram as ``DatagramProtocol`` (and ``asyncio-dgram`` above it) make.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["BATCH", "BUFFER", "RECV_SIZE", "BatchReader", "Peer", "udp_socket"]

BUFFER = 4 << 20  # socket buffers: the ~212 KB default overflows at windows of 256 and up
BATCH = 256  # datagrams read per wake-up before the flush
RECV_SIZE = 65536

Peer = tuple[Any, ...]  # a socket address: (host, port), or IPv6's (host, port, flow, scope)


def udp_socket(family: int, *, bind: Peer | None = None) -> socket.socket:
    """A non-blocking UDP socket with ``BUFFER``-byte buffers, bound if ``bind`` is given.

    Never connected (see ``flyway_kcp.client``): ICMP errors would stop uvloop's reader.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # the kernel caps it at rmem_max / wmem_max
                sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
        sock.setblocking(False)
        if bind is not None:
            sock.bind(bind)
    except BaseException:
        sock.close()
        raise
    return sock


class BatchReader:
    """Call ``on_datagram`` for each datagram waiting on ``sock``, then ``on_batch`` once."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Peer], None],
        on_batch: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._on_datagram = on_datagram
        self._on_batch = on_batch
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        recvfrom, on_datagram = self._sock.recvfrom, self._on_datagram
        for _ in range(BATCH):
            try:
                data, address = recvfrom(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError:  # an ICMP error queued on the socket: nothing to read, go on
                continue
            on_datagram(data, address)
        self._on_batch()

    def close(self) -> None:
        """Stop reading (the socket stays the caller's to close)."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
