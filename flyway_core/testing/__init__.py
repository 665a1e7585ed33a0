"""pytest plugin (entry point ``pytest11``): fixtures to test flyway plugins the way flyway does.

Fixtures: ``pm`` (a fresh plugin manager without entry points), ``plugins``
(its façade), ``settings``, ``echo_server`` (an echo service on 127.0.0.1) and
``tunnel`` (a client tunnel joined in memory to a server front door that dials
targets with the built-in direct dialer).

Helpers, importable from here: ``EchoServer`` and ``joined_tunnel`` (what the fixtures
use), ``listening`` (a listener served over a tunnel while a block runs), and from
``pairs`` a real server and client on 127.0.0.1 with every installed transport
(``run_pair``, or ``serving`` and ``forwarding`` apart), a ``Relay`` a test can cut or
freeze, ``hashed_exchange`` and ``wait_for``; from ``ports`` ``free_port``,
``wait_port`` and ``wait_port_on``, for servers in other processes, and ``blackhole`` (a
port whose connects hang); ``sites.web_site`` (an aiohttp app on 127.0.0.1) and
``certs.self_signed`` (a certificate for 127.0.0.1); in ``flyway_core.testing.probes``
the corpus of strangers' probes (``PROBES``) and ``answer()``, which sends one over a
raw socket and splits what came back; in ``processes`` ``flyway_processes`` (real
``flyway`` processes, always stopped); and in ``udp`` ``udp_echo`` (a UDP echo target
for datagram flows and SOCKS5 UDP).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from flyway_core.address import Address, ServerURL
from flyway_core.client import ClientTunnel
from flyway_core.memory import MemoryTransport
from flyway_core.plugins import FlywayPluginManager, Plugins, make_plugin_manager
from flyway_core.server import FlywayServer
from flyway_core.settings import Settings
from flyway_core.testing.pairs import (
    Relay,
    Running,
    forwarding,
    hashed_exchange,
    run_pair,
    serving,
    wait_for,
)
from flyway_core.testing.ports import free_port, wait_port, wait_port_on

if TYPE_CHECKING:
    from flyway_core.interfaces import Listener, Tunnel

__all__ = [
    "EchoServer",
    "Relay",
    "Running",
    "forwarding",
    "free_port",
    "hashed_exchange",
    "joined_tunnel",
    "listening",
    "run_pair",
    "serving",
    "wait_for",
    "wait_port",
    "wait_port_on",
]

TEST_PASSWORD = "test password"


@pytest.fixture
def pm() -> FlywayPluginManager:
    """A fresh plugin manager holding only the built-ins."""
    return make_plugin_manager(entry_points=False)


@pytest.fixture
def plugins(pm: FlywayPluginManager) -> Plugins:
    """The typed façade over ``pm``."""
    return Plugins(pm)


@pytest.fixture
def settings() -> Settings:
    """Settings with a test password and defaults for everything else."""
    return Settings(password=TEST_PASSWORD)


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back what it receives, half-close aware."""

    def __init__(self) -> None:
        self.address = Address("127.0.0.1", 0)
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Address:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.address = Address("127.0.0.1", self._server.sockets[0].getsockname()[1])
        return self.address

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self._server.wait_closed()


@pytest.fixture
async def echo_server() -> AsyncIterator[Address]:
    """The address of an echo server on 127.0.0.1."""
    async with EchoServer() as address:
        yield address


@contextlib.asynccontextmanager
async def joined_tunnel(
    settings: Settings, plugins: Plugins | None = None, *, wait_ready: bool = True
) -> AsyncIterator[ClientTunnel]:
    """Yield a client tunnel joined in memory to a server front door (ready, unless
    ``wait_ready`` is False: then its first dial may not even have begun)."""
    plugins = plugins or Plugins(make_plugin_manager(entry_points=False))
    door = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports={},
        fallback=plugins.fallback(None, settings),
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=plugins.emit,
    )
    tunnel = ClientTunnel(
        ServerURL("http", "memory", 0), MemoryTransport(door), settings, emit=plugins.emit
    )
    task = asyncio.get_running_loop().create_task(tunnel.run())
    try:
        if wait_ready:
            async with asyncio.timeout(5):
                await tunnel.wait_ready()
        yield tunnel
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def listening(listener: Listener, tunnel: Tunnel) -> AsyncIterator[Address]:
    """Serve ``listener`` over ``tunnel`` in a task; yield the address it bound; stop it after."""
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(listener.serve(tunnel, started=bound.set_result))
    try:
        yield await asyncio.wait_for(bound, 5)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


@pytest.fixture
async def tunnel(settings: Settings) -> AsyncIterator[ClientTunnel]:
    """A client tunnel joined in memory to a server that dials targets directly."""
    async with joined_tunnel(settings) as client:
        yield client
