"""For flyway-kcp's tests: a server serving only KCP, a client, the lossy relay between."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from flyway_kcp import KcpTransport
from flyway_kcp.server import KcpServer
from intermediaries.lossy_udp import Impairment, LossyUdpRelay

from flyway_core import Address, ServerURL, Settings
from flyway_core.client import ClientTunnel
from flyway_core.events import Event
from flyway_core.server import FlywayServer
from flyway_core.testing import EchoServer
from flyway_core.testing.pairs import forwarding, serving

LOSSY = Impairment(loss=0.05, delay=0.03)  # the link: 5% loss, 30 ms each way


class SinkServer:
    """Reads everything, then answers with the SHA-256 of what it read and closes."""

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                digest.update(data)
            writer.write(digest.hexdigest().encode())
            await writer.drain()
        writer.close()

    async def start(self) -> Address:
        self._server = await asyncio.start_server(self._sink, "127.0.0.1", 0)
        return Address("127.0.0.1", self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()


class SourceServer:
    """Reads ``size seed`` (two decimal numbers), sends that many bytes of os.urandom."""

    async def _source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ValueError):
            size = int((await reader.readline()).split()[0])
            remaining = size
            digest = hashlib.sha256()
            while remaining:
                data = os.urandom(min(1 << 16, remaining))
                digest.update(data)
                writer.write(data)
                await writer.drain()
                remaining -= len(data)
            self.sent.append(digest.hexdigest())
            writer.write_eof()
            await reader.read()
        writer.close()

    async def start(self) -> Address:
        self.sent: list[str] = []
        self._server = await asyncio.start_server(self._source, "127.0.0.1", 0)
        return Address("127.0.0.1", self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()


@dataclass
class KcpPair:
    """A server (KCP only), a relay in front of its UDP port, and a client through it."""

    server: FlywayServer
    transport: KcpTransport
    relay: LossyUdpRelay
    tunnel: ClientTunnel
    ports: dict[Address, Address]
    targets: dict[str, Address]
    source: SourceServer
    server_events: list[Event] = field(default_factory=list)
    client_events: list[Event] = field(default_factory=list)

    @property
    def endpoint(self) -> KcpServer:
        assert self.transport.server is not None
        return self.transport.server

    def local(self, name: str) -> Address:
        return self.ports[self.targets[name]]


@contextlib.asynccontextmanager
async def kcp_pair(
    *,
    up: Impairment = LOSSY,
    down: Impairment = LOSSY,
    settings: Settings | None = None,
    seed: int = 13,
    record: int = 0,
) -> AsyncIterator[KcpPair]:
    """Start everything on 127.0.0.1; the client dials the relay's port."""
    settings = settings or Settings(password="pw")
    transport = KcpTransport()
    sink, source = SinkServer(), SourceServer()
    async with EchoServer() as echo:
        targets = {"echo": echo, "sink": await sink.start(), "source": await source.start()}
        server_events: list[Event] = []
        client_events: list[Event] = []
        try:
            async with serving(
                settings, server_events, transports=lambda s: {"kcp": transport}
            ) as (server, bound):
                relay = LossyUdpRelay(
                    ("127.0.0.1", bound.port), up=up, down=down, seed=seed, record=record
                )
                async with relay:
                    url = ServerURL("http", "127.0.0.1", relay.port)
                    async with forwarding(
                        url, "kcp", settings, list(targets.values()), client_events
                    ) as (tunnel, ports):
                        yield KcpPair(
                            server,
                            transport,
                            relay,
                            tunnel,
                            ports,
                            targets,
                            source,
                            server_events,
                            client_events,
                        )
        finally:
            sink.close()
            source.close()
