"""KCP over IPv6: a server bound to ::1, a client dialing it by address."""

from __future__ import annotations

import asyncio
import socket

import pytest
from flyway_kcp import KcpTransport

from flyway_core import Address, ServerURL, Settings
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.server import FlywayServer
from flyway_core.testing import EchoServer
from flyway_core.testing.pairs import forwarding, hashed_exchange


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_a_session_over_ipv6_carries_hashed_bytes() -> None:
    settings = Settings(password="pw")
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    transport = KcpTransport()
    server = FlywayServer(
        Address("::1", 0),
        settings,
        transports={"kcp": transport},
        fallback=plugins.fallback(None, settings),
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=lambda event: None,
    )
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(server.serve(started=bound.set_result))
    try:
        port = (await asyncio.wait_for(bound, 5)).port
        async with EchoServer() as echo:
            url = ServerURL("http", "::1", port)
            async with forwarding(url, "kcp", settings, [echo], []) as (_, ports):
                async with asyncio.timeout(20):
                    sent, echoed, _, _ = await hashed_exchange(ports[echo], 1 << 20)
        assert sent == echoed
        assert transport.server is not None and transport.server.address[0] == "::1"
    finally:
        serving.cancel()
        await asyncio.wait([serving], timeout=5)
