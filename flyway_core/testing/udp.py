"""A UDP echo server on 127.0.0.1 for tests of datagram flows and SOCKS5 UDP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from flyway_core.address import Address
from flyway_core.udp import UdpEndpoint, open_udp

__all__ = ["UdpEcho", "udp_echo"]


class UdpEcho:
    """Echoes every datagram (empty ones too) and remembers who sent each."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []
        self.endpoint: UdpEndpoint | None = None

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        return Address(*self.endpoint.address)

    def echo(self, data: bytes, host: str, port: int) -> None:
        self.sources.append((host, port))
        assert self.endpoint is not None
        self.endpoint.send(data, host, port)


@contextlib.asynccontextmanager
async def udp_echo(host: str = "127.0.0.1") -> AsyncIterator[UdpEcho]:
    """A running ``UdpEcho`` bound to a free port of ``host``."""
    echo = UdpEcho()
    echo.endpoint = await open_udp(host, 0, echo.echo)
    try:
        yield echo
    finally:
        echo.endpoint.close()
