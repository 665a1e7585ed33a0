"""flyway transport ``tcp``: the tunnel over one plain TCP connection on a port of its own.

A complete third-party transport plugin in one module: an option, a transport,
a carrier. The client sends its hello first, behind a two-byte length; the
server checks it and either runs the session or hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import click

from flyway_core import DialError, ServerURL, Settings, TunnelRefused, hookimpl
from flyway_core.interfaces import Carrier, FrontDoor, Transport

__all__ = ["TcpCarrier", "TcpTransport"]


@hookimpl
def add_options() -> list[click.Option]:
    return [click.Option(["--tcp-port"], type=int, default=0, help="Port of the tcp transport.")]


@hookimpl
def register_transports(settings: Settings) -> list[TcpTransport]:
    return [TcpTransport(settings.option("tcp_port", 0))]


class TcpCarrier(Carrier):
    """A carrier over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> bytes:
        try:
            return await self.reader.read(1 << 16)
        except ConnectionError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class TcpTransport(Transport):
    """Dials and serves the tunnel on ``port``."""

    name = "tcp"

    def __init__(self, port: int) -> None:
        self.port = port

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> TcpCarrier:
        try:
            reader, writer = await asyncio.open_connection(server.host, self.port)
        except OSError as exc:
            raise DialError(f"cannot reach {server.host}:{self.port}: {exc.strerror}") from None
        writer.write(len(hello).to_bytes(2, "big") + hello)
        if await reader.read(1) != b"+":
            raise TunnelRefused(f"{server.host}:{self.port}")
        return TcpCarrier(reader, writer)

    @contextlib.asynccontextmanager
    async def serve(self, door: FrontDoor) -> AsyncIterator[None]:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = str(writer.get_extra_info("peername"))
            size = int.from_bytes(await reader.readexactly(2), "big")
            connection = door.accept(await reader.readexactly(size), peer)
            if connection is None:
                writer.close()
                return
            writer.write(b"+")
            await door.run_session(
                TcpCarrier(reader, writer), connection, peer=peer, transport="tcp"
            )

        server = await asyncio.start_server(on_client, "127.0.0.1", self.port)
        async with server:
            yield
