"""--auto against real servers on 127.0.0.1: WebSocket when it passes, else HTTP POST (and
quiet after), without the WebSocket plugin, a wrong password, and a tunnel over it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import flyway_websocket
import pytest
from flyway_http_post import HttpPostTransport
from flyway_http_post.client import HttpPostCarrier

from flyway_core import Address, ConfigError, ServerURL, Settings, TunnelRefused
from flyway_core.auto import AutoTransport
from flyway_core.cli import _pick_transport
from flyway_core.events import SessionUp
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import hashed_exchange, run_pair, serving

if TYPE_CHECKING:
    from flyway_core.interfaces import Transport


@contextlib.asynccontextmanager
async def flyway_server(
    transports: Callable[[Settings], dict[str, Transport]] | None = None,
) -> AsyncIterator[int]:
    """A flyway server (every installed transport, or ``transports(settings)``): its port."""
    async with serving(Settings(password="pw"), [], transports=transports) as (_, address):
        yield address.port


def only_http(settings: Settings) -> dict[str, Transport]:
    return {"http": HttpPostTransport.from_settings(settings)}


def _hello(password: str = "pw") -> bytes:
    return ClientConnection(derive_master_key(password), now=time.time()).hello()


def _auto(**options: Any) -> AutoTransport:
    settings = Settings(password="pw", options=options)
    transport = Plugins(make_plugin_manager(blocked=["console"])).transport("auto", settings)
    assert isinstance(transport, AutoTransport)
    return transport


async def test_auto_dials_websocket_when_it_passes() -> None:
    auto = _auto()
    async with flyway_server() as port:
        async with asyncio.timeout(10):
            carrier = await auto.dial(ServerURL("http", "127.0.0.1", port), _hello(), Settings())
            await carrier.close()
    assert isinstance(carrier, flyway_websocket.WebSocketCarrier)
    assert auto.chosen is not None and auto.chosen.name == "ws"
    assert carrier.keepalive is True  # the session pings over WebSocket


async def test_auto_falls_back_to_http_post_and_stays_quiet_after() -> None:
    auto = _auto()
    settings = Settings(password="pw")
    async with flyway_server(only_http) as port:
        server = ServerURL("http", "127.0.0.1", port)
        async with asyncio.timeout(10):
            carrier = await auto.dial(server, _hello(), settings)
            await carrier.close()
            assert auto.chosen is auto.http
            assert isinstance(carrier, HttpPostCarrier)
            assert carrier.keepalive is False  # HTTP POST: no keepalive pings
            started = time.monotonic()
            carrier = await auto.dial(server, _hello(), settings)
            await carrier.close()
            assert auto.chosen is auto.http
        assert time.monotonic() - started < 5  # WebSocket is not tried again yet


async def test_auto_without_the_websocket_plugin_uses_http_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWAY_DISABLE_PLUGINS", "websocket")
    auto = _auto()
    assert auto.websocket is None  # the disabled plugin is not among its choices
    async with flyway_server(only_http) as port, asyncio.timeout(10):
        carrier = await auto.dial(
            ServerURL("http", "127.0.0.1", port), _hello(), Settings(password="pw")
        )
        await carrier.close()
    assert auto.chosen is auto.http and carrier.keepalive is False


async def test_auto_with_a_wrong_password_is_refused() -> None:
    async with flyway_server() as port, asyncio.timeout(10):
        with pytest.raises(TunnelRefused, match="wrong password"):
            await _auto().dial(
                ServerURL("http", "127.0.0.1", port), _hello("wrong"), Settings(password="wrong")
            )


async def test_a_tunnel_over_auto_moves_bytes(echo_server: Address) -> None:
    async with run_pair([echo_server], transport="auto") as pair, asyncio.timeout(10):
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed
        assert isinstance(pair.tunnel.transport, AutoTransport)
        assert pair.tunnel.transport.chosen is not None
        assert pair.tunnel.transport.chosen.name == "ws"
    (up,) = [e for e in pair.client_events if isinstance(e, SessionUp)]
    assert up.transport == "ws (auto)"  # the console says "over ws (auto)"


def test_the_core_selects_a_transport_by_its_flag() -> None:
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    params = {"websocket": False, "kcp": False, "auto": False, "transport": None}
    settings = Settings(password="pw")
    assert _pick_transport(plugins, settings, {**params, "auto": True}).name == "auto"
    with pytest.raises(ConfigError, match="choose one transport: -w, --auto"):
        _pick_transport(plugins, settings, {**params, "websocket": True, "auto": True})
    assert _pick_transport(plugins, settings, params).name == "http"
    assert _pick_transport(plugins, settings, {**params, "transport": "ws"}).name == "ws"


def test_auto_needs_http_post_and_says_which_package() -> None:
    plugins = Plugins(make_plugin_manager(blocked=["console", "http_post"]))
    with pytest.raises(ConfigError, match="pip install flyway-http-post"):
        plugins.transport("auto", Settings(password="pw"), flag="--auto")
