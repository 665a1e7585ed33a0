"""Fixtures for flyway-socks5: a ``-D`` listener on a memory tunnel, and targets to reach."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from flyway_socks5 import Socks5Listener
from flyway_socks5.base import Credentials

from flyway_core import Address, Settings, TargetError, hookimpl
from flyway_core.direct import DIRECT
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.protocol import ResetReason
from flyway_core.testing import joined_tunnel, listening
from flyway_core.testing.sites import web_site

# Targets under .test that the test dialer answers itself, one per failure kind.
OUTCOMES = {
    "not-allowed.test": ResetReason.NOT_ALLOWED,
    "timed-out.test": ResetReason.TIMED_OUT,
    "unreachable.test": ResetReason.UNREACHABLE,
    "network-unreachable.test": ResetReason.NETWORK_UNREACHABLE,
    "busy.test": ResetReason.BUSY,
}


class Outcomes:
    """A dialer plugin that fails the OUTCOMES targets as a policy or a network would."""

    @hookimpl
    def dial_upstream(self, target: Address, settings: Settings) -> Outcomes | None:
        return self if target.host in OUTCOMES else None

    async def connect(self, target: Address, protocol: object) -> None:
        reason = OUTCOMES[target.host]
        raise TargetError(reason.describe(), reason=reason)


# A name only the tunnel's server side can resolve (its test dialer sends it to 127.0.0.1,
# the same port): a client that reaches a target by it must have sent the name through.
SERVER_ONLY = "only-the-server.test"


class ServerOnlyName:
    """A dialer plugin: the server resolves SERVER_ONLY to 127.0.0.1; it counts the dials."""

    def __init__(self) -> None:
        self.dials = 0

    @hookimpl
    def dial_upstream(self, target: Address, settings: Settings) -> ServerOnlyName | None:
        return self if target.host == SERVER_ONLY else None

    async def connect(self, target: Address, protocol: asyncio.Protocol) -> None:
        self.dials += 1
        await DIRECT.connect(Address("127.0.0.1", target.port), protocol)


@pytest.fixture(scope="session")
def server_only_name() -> str:
    """SERVER_ONLY, once checked not to resolve here (on the client's side)."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(SERVER_ONLY, 80)
    return SERVER_ONLY


@pytest.fixture
def server_only(server_only_name: str) -> ServerOnlyName:
    """The server side's dialer for SERVER_ONLY (``.dials``: how often it was reached)."""
    return ServerOnlyName()


StartProxy = Callable[..., Any]


@pytest.fixture
async def start_proxy(settings: Settings, server_only: ServerOnlyName) -> AsyncIterator[StartProxy]:
    """Start a -D listener on 127.0.0.1 (a free port) over a memory tunnel; return its address."""
    pm = make_plugin_manager(entry_points=False)
    pm.register(Outcomes(), name="outcomes")
    pm.register(server_only, name="server-only")
    async with contextlib.AsyncExitStack() as stack:
        tunnel = await stack.enter_async_context(joined_tunnel(settings, Plugins(pm)))

        async def start(
            credentials: tuple[bytes, bytes] | None = None, handshake_timeout: float = 5.0
        ) -> Address:
            creds = Credentials(*credentials) if credentials else None
            listener = Socks5Listener(Address("127.0.0.1", 0), creds, handshake_timeout)
            return await stack.enter_async_context(listening(listener, tunnel))

        yield start


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> Address:
    """A -D listener without credentials."""
    address: Address = await start_proxy()
    return address


async def _headers(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs, "headers": dict(request.headers)})


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, headers={"X-Length": str(len(body))})


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Connection": "keep-alive, X-Drop", "X-Drop": "1"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b"one ", b"two ", b"three"):
        await response.write(part)
    await response.write_eof()
    return response


@pytest.fixture
async def web_target() -> AsyncIterator[Address]:
    """An HTTP server on 127.0.0.1: /headers (what arrived), /echo (POST body), /chunked."""
    app = web.Application()
    app.router.add_get("/headers", _headers)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/", _hello)
    async with web_site(app) as port:
        yield Address("127.0.0.1", port)


async def _hello(request: web.Request) -> web.Response:
    return web.Response(body=b"hello from the target")
