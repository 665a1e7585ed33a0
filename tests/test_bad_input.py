"""Bad input: wrong passwords, probes, garbage, replays, vanishing peers. The server stays up."""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp

from flyway_core import Address, Settings
from flyway_core.events import DialFailed, SessionDown, TunnelRejected
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import hashed_exchange, run_pair, wait_for


async def _fetch(url: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, dict(response.headers), await response.read()


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "date"}


async def test_a_wrong_password_is_one_clear_line_and_retried(echo_server: Address) -> None:
    client = Settings(password="not the password")
    async with run_pair([echo_server], client_settings=client, wait_ready=False) as pair:
        await wait_for(lambda: sum(isinstance(e, DialFailed) for e in pair.client_events) >= 2)
        failures = [e for e in pair.client_events if isinstance(e, DialFailed)]
        assert (
            "did not accept the tunnel (wrong password, or not a flyway server"
            in failures[0].reason
        )
        assert failures[1].retry_in > failures[0].retry_in  # backing off
        assert any(isinstance(e, TunnelRejected) for e in pair.server_events)
        local = pair.local(echo_server)
        reader, writer = await asyncio.open_connection(local.host, local.port)
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # refused cleanly, at once
        writer.close()


async def test_a_server_that_is_not_flyway_is_reported() -> None:
    async def plain_site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        writer.close()

    from flyway_core.client import ClientTunnel
    from flyway_core.plugins import Plugins, make_plugin_manager

    site = await asyncio.start_server(plain_site, "127.0.0.1", 0)
    port = site.sockets[0].getsockname()[1]
    events: list[object] = []
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    settings = Settings(password="pw")
    from flyway_core.address import ServerURL

    tunnel = ClientTunnel(
        ServerURL("http", "127.0.0.1", port),
        plugins.transport("ws", settings),
        settings,
        emit=events.append,
    )
    async with site:
        task = asyncio.create_task(tunnel.run())
        await wait_for(lambda: any(isinstance(e, DialFailed) for e in events))
        task.cancel()
    (failure, *_) = [e for e in events if isinstance(e, DialFailed)]
    assert f"not a flyway server at http://127.0.0.1:{port}/" in failure.reason


async def test_a_probe_sees_exactly_the_fallback(echo_server: Address) -> None:
    async with run_pair([echo_server]) as pair:
        base = f"http://127.0.0.1:{pair.server.bound.port}"  # type: ignore[union-attr]
        plain = await _fetch(f"{base}/some/page")
        forged_hello = base64.urlsafe_b64encode(b"\x00" * 90).decode()
        probe_headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
            "Sec-WebSocket-Version": "13",
            "Cookie": f"sid={forged_hello}",
        }
        probe = await _fetch(f"{base}/some/page", headers=probe_headers)
        assert plain[0] == probe[0] == 404
        assert plain[2] == probe[2]
        assert _comparable(plain[1]) == _comparable(probe[1])
        assert any(isinstance(e, TunnelRejected) for e in pair.server_events)


async def test_a_replayed_handshake_opens_nothing(echo_server: Address) -> None:
    async with run_pair([echo_server]) as pair:
        # A client hello captured on the wire, replayed: the first use opens a
        # session, the replay gets the fallback page.
        hello = ClientConnection(derive_master_key("pw"), now=time.time()).hello()
        accepted = pair.server.accept(hello, "first")
        assert accepted is not None
        assert pair.server.accept(hello, "replayer") is None
        rejected = [e for e in pair.server_events if isinstance(e, TunnelRejected)]
        assert "replay" in rejected[-1].reason


async def test_garbage_on_the_port_leaves_the_server_serving(echo_server: Address) -> None:
    async with run_pair([echo_server]) as pair, asyncio.timeout(10):
        port = pair.server.bound.port  # type: ignore[union-attr]
        for garbage in (
            b"\x16\x03\x01\x02\x00" + bytes(range(256)),
            b"GET / HTTP/1.1\r\n\x00\x00\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(garbage)
            await reader.read()
            writer.close()
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed


async def test_a_client_that_vanishes_mid_stream_frees_its_session(echo_server: Address) -> None:
    async with run_pair([echo_server], via_relay=True) as pair, asyncio.timeout(10):
        local = pair.local(echo_server)
        reader, writer = await asyncio.open_connection(local.host, local.port)
        writer.write(b"x" * 1000)
        await reader.readexactly(1000)
        session = pair.tunnel.session
        assert pair.relay is not None
        pair.relay.cut()  # the network between client and server drops, mid-stream
        await wait_for(lambda: any(isinstance(e, SessionDown) for e in pair.server_events))
        assert await reader.read() == b""  # the local connection is closed, not left hanging
        await wait_for(
            lambda: pair.tunnel.session is not None and pair.tunnel.session is not session
        )
        sent, echoed, *_ = await hashed_exchange(local, 1 << 20)  # a new session carries on
        assert sent == echoed


async def test_a_silent_path_is_detected_by_the_idle_timeout(echo_server: Address) -> None:
    settings = Settings(password="pw", idle_timeout=1.5)
    async with run_pair([echo_server], server_settings=settings, via_relay=True) as pair:
        first = pair.tunnel.session
        await asyncio.sleep(2.0)  # idle but alive: keepalives hold the session up
        assert pair.tunnel.session is first
        assert pair.relay is not None
        pair.relay.freeze()  # packets vanish, nothing closes
        async with asyncio.timeout(5):
            await wait_for(lambda: any(isinstance(e, SessionDown) for e in pair.client_events))
        (down,) = [e for e in pair.client_events if isinstance(e, SessionDown)]
        assert "nothing received for 1.5 s" in (down.error or "")
