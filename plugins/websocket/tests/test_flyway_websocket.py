"""flyway-websocket: hook wiring, then real upgrades against a real front door on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import flyway_websocket
import pytest

from flyway_core import Address, ServerURL, Settings, TunnelRefused
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.server import FlywayServer


def test_registers_the_ws_transport_for_dash_w() -> None:
    (transport,) = flyway_websocket.register_transports(Settings())
    assert (transport.name, transport.flag) == ("ws", "-w")


def test_hello_survives_the_cookie_encoding() -> None:
    for hello in (b"", b"\x00", os.urandom(97), os.urandom(200)):
        assert flyway_websocket._decode(flyway_websocket._encode(hello)) == hello
    assert flyway_websocket._decode("not base64 !!") is None


@pytest.fixture
async def door() -> FlywayServer:
    settings = Settings(password="pw")
    plugins = Plugins(make_plugin_manager(entry_points=False, blocked=["console"]))
    server = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports={"ws": flyway_websocket.WebSocketTransport()},
        fallback=plugins.fallback(None, settings),
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=lambda event: None,
    )
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.serve(started=bound.set_result))
    await bound
    yield server
    task.cancel()


async def test_an_upgrade_without_a_hello_is_not_upgraded(door: FlywayServer) -> None:
    assert door.bound is not None
    url = f"ws://127.0.0.1:{door.bound.port}/"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url)
    assert caught.value.status == 404


async def test_a_wrong_password_is_refused_before_the_upgrade(door: FlywayServer) -> None:
    from flyway_core.protocol import ClientConnection, derive_master_key

    assert door.bound is not None
    hello = ClientConnection(derive_master_key("wrong"), now=__import__("time").time()).hello()
    server = ServerURL("http", "127.0.0.1", door.bound.port)
    with pytest.raises(TunnelRefused, match="HTTP 404"):
        await flyway_websocket.WebSocketTransport().dial(server, hello, Settings())


async def dial_capturing(
    door: FlywayServer,
) -> tuple[flyway_websocket.WebSocketCarrier, list[bytes]]:
    """Dial the door with a good hello; the server side only records what arrives."""
    from flyway_core.protocol import ClientConnection, derive_master_key

    assert door.bound is not None
    received: list[bytes] = []

    async def capture(carrier, connection, *, peer, transport):  # type: ignore[no-untyped-def]
        while data := await carrier.receive():
            received.append(data)

    door.run_session = capture  # type: ignore[method-assign]
    hello = ClientConnection(derive_master_key("pw"), now=__import__("time").time()).hello()
    server = ServerURL("http", "127.0.0.1", door.bound.port)
    carrier = await flyway_websocket.WebSocketTransport().dial(server, hello, Settings())
    return carrier, received


async def test_a_send_larger_than_one_message_arrives_whole(door: FlywayServer) -> None:
    carrier, received = await dial_capturing(door)
    payload = os.urandom(3 * flyway_websocket.MAX_MESSAGE + 5)
    await carrier.send(payload)
    async with asyncio.timeout(5):
        while sum(map(len, received)) < len(payload):
            await asyncio.sleep(0.01)
    await carrier.close()
    assert b"".join(received) == payload
    assert len(received) == 4


async def test_small_sends_are_written_at_once_in_order(door: FlywayServer) -> None:
    carrier, received = await dial_capturing(door)
    messages = [os.urandom(n) for n in (1, 64, 1000, flyway_websocket.MAX_MESSAGE)]
    assert all(carrier.send_nowait(message) for message in messages)  # no await: written now
    assert not carrier.send_nowait(os.urandom(flyway_websocket.MAX_MESSAGE + 1))  # send() splits
    async with asyncio.timeout(5):
        while len(received) < len(messages):
            await asyncio.sleep(0.01)
    await carrier.close()
    assert received == messages
    assert not carrier.send_nowait(b"after close")
