"""A UDP socket for relaying: datagrams in through a callback, out without ever waiting.

asyncio's datagram transport is the hot path (one callback per datagram, no
task switch). Two things it does not do are done here: it silently drops
zero-length datagrams on send (CPython 3.11), which UDP allows and DNS-style
probes use, so those go to the socket directly; and it queues without bound
when the socket is full, so ``send`` drops (returns False) once more than
``budget`` bytes wait.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from flyway_core.flow import DATAGRAM_BUDGET

__all__ = ["UdpEndpoint", "open_udp"]


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket; ``on_datagram(data, host, port)`` gets what arrives."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, str, int], object],
        on_error: Callable[[Exception], object] | None = None,
        budget: int = DATAGRAM_BUDGET,
    ) -> None:
        self.sock = sock
        self.on_datagram = on_datagram
        self.on_error = on_error
        self.budget = budget
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the socket is bound to."""
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)  # no subclass of it

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, str(addr[0]), int(addr[1]))

    def error_received(self, exc: Exception) -> None:  # an ICMP error for an earlier datagram
        if self.on_error is not None:
            self.on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes, host: str, port: int) -> bool:
        """Send one datagram to ``host:port`` (an IP literal); False if it was dropped."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        size: Callable[[], int] | None = getattr(transport, "get_write_buffer_size", None)
        if size is not None and size() > self.budget:
            return False
        if data:
            transport.sendto(data, (host, port))
            return True
        try:  # asyncio would drop it: the socket sends an empty datagram fine
            self.sock.sendto(b"", (host, port))
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_udp(
    host: str,
    port: int,
    on_datagram: Callable[[bytes, str, int], object],
    *,
    on_error: Callable[[Exception], object] | None = None,
    family: int | None = None,
    buffer: int = 1 << 20,
) -> UdpEndpoint:
    """Bind a UDP socket at ``host:port`` (0: any port); OSError if it cannot be bound.

    ``family`` defaults to IPv6 for a host with a colon, IPv4 otherwise; ``::``
    binds a dual-stack socket. ``buffer`` sizes the kernel's send and receive
    buffers (a burst of datagrams outruns the defaults).
    """
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, buffer)
        if family == socket.AF_INET6 and host in ("::", ""):  # dual stack: IPv4 too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(sock, on_datagram, on_error), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    return endpoint
