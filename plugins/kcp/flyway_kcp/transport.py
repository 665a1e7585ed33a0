"""The ``kcp`` transport (``-K``): dial a conversation, or serve them on the UDP port."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from flyway_core import ServerURL, Settings
from flyway_core.interfaces import FrontDoor, Transport
from flyway_kcp import client
from flyway_kcp.carrier import KcpCarrier
from flyway_kcp.config import KcpConfig
from flyway_kcp.server import KcpServer

__all__ = ["KcpTransport"]


class KcpTransport(Transport):
    """KCP over UDP on the server's port number; every datagram sealed."""

    name = "kcp"
    flag = "-K"

    def __init__(self, config: KcpConfig | None = None) -> None:
        self.config = config or KcpConfig()
        self.server: KcpServer | None = None  # the last one served (tests look inside)

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> KcpCarrier:
        return await client.dial(server, hello, settings.password, self.config)

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        self.server = KcpServer(door, self.config, self.name)
        return self.server.serving()
