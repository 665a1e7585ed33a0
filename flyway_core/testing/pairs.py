"""Run a real flyway server and client in-process on 127.0.0.1, and move hashed bytes through."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from flyway_core.address import Address, ServerURL
from flyway_core.client import ClientTunnel
from flyway_core.events import Event
from flyway_core.forward import ForwardListener
from flyway_core.interfaces import Transport
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.server import FlywayServer
from flyway_core.settings import Settings

__all__ = [
    "Relay",
    "Running",
    "forwarding",
    "hashed_exchange",
    "run_pair",
    "serving",
    "wait_for",
]


class Relay:
    """A TCP relay between client and server whose connections a test can cut."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self.writers: list[asyncio.StreamWriter] = []
        self.frozen = False
        self.address = Address("127.0.0.1", 0)
        self._server: asyncio.Server | None = None

    async def start(self) -> Address:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.address = Address("127.0.0.1", self._server.sockets[0].getsockname()[1])
        return self.address

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self.writers += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(1 << 16):
                    if not self.frozen:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    def freeze(self) -> None:
        """Silently drop everything from now on, keeping connections open (a dead path)."""
        self.frozen = True

    def cut(self) -> int:
        """Drop every relayed connection at once, as a dead network would; return how many."""
        dropped = sum(not writer.transport.is_closing() for writer in self.writers)
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        return dropped

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@dataclass
class Running:
    """What ``run_pair`` yields: both ends, the forwarded ports, and what each end emitted."""

    server: FlywayServer
    tunnel: ClientTunnel
    ports: dict[Address, Address]  # target -> local forwarded address
    server_events: list[Event] = field(default_factory=list)
    client_events: list[Event] = field(default_factory=list)
    relay: Relay | None = None

    def local(self, target: Address) -> Address:
        return self.ports[target]


# Polling is the point here: a test waits for any condition on objects that signal nothing.
async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait until ``predicate()`` is true, checking every 10 ms; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _recorder(into: list[Event], plugins: Plugins) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        into.append(event)
        plugins.emit(event)

    return emit


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    events: list[Event],
    *,
    ssl_context: ssl.SSLContext | None = None,
    transports: Callable[[Settings], dict[str, Transport]] | None = None,
) -> AsyncIterator[tuple[FlywayServer, Address]]:
    """A flyway server on 127.0.0.1, and where it listens.

    It serves every installed transport, or those ``transports(settings)`` returns.
    """
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    server = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports=transports(settings) if transports else plugins.transports(settings),
        fallback=plugins.fallback(None, settings),
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=_recorder(events, plugins),
        ssl_context=ssl_context,
    )
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.serve(started=bound.set_result))
    try:
        yield server, await asyncio.wait_for(bound, 5)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


@contextlib.asynccontextmanager
async def forwarding(
    server_url: ServerURL,
    transport: str,
    settings: Settings,
    targets: list[Address],
    events: list[Event],
    *,
    wait_ready: bool = True,
) -> AsyncIterator[tuple[ClientTunnel, dict[Address, Address]]]:
    """A flyway client forwarding a local port to each target: its tunnel and the ports."""
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    tunnel = ClientTunnel(
        server_url,
        plugins.transport(transport, settings),
        settings,
        emit=_recorder(events, plugins),
    )
    tasks = [asyncio.create_task(tunnel.run())]
    ports: dict[Address, Address] = {}
    try:
        for target in targets:
            listener = ForwardListener(Address("127.0.0.1", 0), target)
            got: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
            tasks.append(asyncio.create_task(listener.serve(tunnel, started=got.set_result)))
            ports[target] = await asyncio.wait_for(got, 5)
        if wait_ready:
            await asyncio.wait_for(tunnel.wait_ready(), 5)
        yield tunnel, ports
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.wait(tasks, timeout=5)


@contextlib.asynccontextmanager
async def run_pair(
    targets: list[Address],
    *,
    transport: str = "ws",
    server_settings: Settings | None = None,
    client_settings: Settings | None = None,
    wait_ready: bool = True,
    via_relay: bool = False,
    front: Callable[[Address], Awaitable[str]] | None = None,
    server_ssl: ssl.SSLContext | None = None,
) -> AsyncIterator[Running]:
    """A server and a client (forwarding a local port to each target) on 127.0.0.1."""
    server_settings = server_settings or Settings(password="pw")
    client_settings = client_settings or server_settings
    server_events: list[Event] = []
    client_events: list[Event] = []
    async with serving(server_settings, server_events, ssl_context=server_ssl) as (
        server,
        address,
    ):
        relay = Relay(address) if via_relay else None
        if relay is not None:
            address = await relay.start()
        server_url = ServerURL("https" if server_ssl else "http", "127.0.0.1", address.port)
        if front is not None:  # an intermediary (proxy, CDN) the client dials instead
            server_url = ServerURL.parse(await front(address), default_port=80)
        try:
            async with forwarding(
                server_url,
                transport,
                client_settings,
                targets,
                client_events,
                wait_ready=wait_ready,
            ) as (tunnel, ports):
                yield Running(server, tunnel, ports, server_events, client_events, relay)
        finally:
            if relay is not None:
                relay.close()


async def hashed_exchange(
    local: Address, upload: int, *, chunk: int = 1 << 16
) -> tuple[str, str, str, str]:
    """Send ``upload`` random bytes to an echo target and read them back; return 4 hashes.

    Returns (sent, echoed) hashes for the upload and the download side, both
    directions running at once; half-closes after sending.
    """
    reader, writer = await asyncio.open_connection(local.host, local.port)
    sent, got = hashlib.sha256(), hashlib.sha256()

    async def send() -> None:
        remaining = upload
        while remaining:
            data = os.urandom(min(chunk, remaining))
            sent.update(data)
            writer.write(data)
            await writer.drain()
            remaining -= len(data)
        writer.write_eof()

    async def receive() -> int:
        total = 0
        while data := await reader.read(1 << 16):
            got.update(data)
            total += len(data)
        return total

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(send())
        received = tasks.create_task(receive())
    writer.close()
    assert received.result() == upload
    return sent.hexdigest(), got.hexdigest(), str(upload), str(received.result())
