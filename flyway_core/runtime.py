"""Assemble and run a server or a client from plugins and settings (the CLI's engine)."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from flyway_core.client import ClientTunnel
from flyway_core.events import Listening, Traffic
from flyway_core.server import FlywayServer
from flyway_core.stats import Stats

if TYPE_CHECKING:
    from flyway_core.address import Address, ServerURL
    from flyway_core.interfaces import Listener, Transport
    from flyway_core.plugins import Plugins
    from flyway_core.settings import Settings

__all__ = ["run_client", "run_server"]

TRAFFIC_INTERVAL = 1.0


async def _report_traffic(plugins: Plugins, stats: Stats) -> None:
    """Emit the totals once a second, but only when they changed: an idle tunnel is quiet."""
    last: Traffic | None = None
    while True:
        await asyncio.sleep(TRAFFIC_INTERVAL)
        now = Traffic(stats.sent, stats.received, stats.streams, stats.sessions)
        if now != last:
            plugins.emit(now)
            last = now


async def run_server(
    plugins: Plugins,
    settings: Settings,
    listen: Address,
    *,
    fallback_spec: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    started: Callable[[FlywayServer], object] | None = None,
) -> None:
    """Serve every installed transport on ``listen`` until cancelled."""
    transports = plugins.transports(settings)
    server = FlywayServer(
        listen,
        settings,
        transports=transports,
        fallback=plugins.fallback(fallback_spec, settings),
        dialer_for=functools.partial(plugins.dialer, settings=settings),
        emit=plugins.emit,
        ssl_context=ssl_context,
    )
    async with AsyncExitStack() as stack:
        for lifespan in plugins.lifespans(settings):
            await stack.enter_async_context(lifespan)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_report_traffic(plugins, server.stats))
            await server.serve(started=lambda _: started(server) if started else None)


async def run_client(
    plugins: Plugins,
    settings: Settings,
    server: ServerURL,
    transport: Transport,
    listeners: Sequence[Listener],
    *,
    started: Callable[[ClientTunnel, list[tuple[Listener, Address]]], object] | None = None,
) -> None:
    """Keep a tunnel to ``server`` and serve ``listeners`` through it until cancelled."""
    tunnel = ClientTunnel(server, transport, settings, emit=plugins.emit)
    bound: list[tuple[Listener, Address]] = []

    def on_bound(listener: Listener, address: Address) -> None:
        bound.append((listener, address))
        plugins.emit(Listening(str(listener), address))
        if len(bound) == len(listeners) and started is not None:
            started(tunnel, bound)

    async with AsyncExitStack() as stack:
        for lifespan in plugins.lifespans(settings):
            await stack.enter_async_context(lifespan)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_report_traffic(plugins, tunnel.stats))
            tasks.create_task(tunnel.run())
            for listener in listeners:
                tasks.create_task(
                    listener.serve(tunnel, started=functools.partial(on_bound, listener))
                )
