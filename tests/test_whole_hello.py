"""A handshake is accepted only when a whole, authenticated hello was checked.

Every prefix of a real hello, the valid 50-byte prefix (salt and sealed length,
which authenticates), a hello with one bit flipped, and a good hello followed by
garbage: over WebSocket (the hello in the upgrade's cookie) and over HTTP POST
(in an OPEN envelope), each gets exactly what an unclaimed request gets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import aiohttp
import pytest
from flyway_http_post.envelope import EnvelopeKeys, Kind, Request, new_session_id

from flyway_core import Settings
from flyway_core.events import Event, SessionUp, TunnelRejected
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import serving

PASSWORD = "whole hello"
HELLO_PREFIX = 32 + 18  # salt, then the sealed length of the Hello record


def _hello() -> bytes:
    return ClientConnection(derive_master_key(PASSWORD), now=time.time()).hello()


def _flipped(hello: bytes, index: int) -> bytes:
    data = bytearray(hello)
    data[index] ^= 0x01
    return bytes(data)


def _bad_hellos() -> list[tuple[str, bytes]]:
    hello = _hello()
    cases = [(f"prefix {n}", hello[:n]) for n in range(1, HELLO_PREFIX)]
    cases.append(("valid 50-byte prefix", hello[:HELLO_PREFIX]))
    cases.append(("all but the last byte", hello[:-1]))
    cases += [(f"bit {i} flipped", _flipped(hello, i)) for i in (0, 40, len(hello) - 1)]
    cases.append(("hello then garbage", hello + os.urandom(40)))
    cases.append(("hello then 7 bytes", hello + os.urandom(7)))
    client = ClientConnection(derive_master_key(PASSWORD), now=time.time())
    first = client.hello()
    client.ping(time.time())  # an authentic record after the hello
    cases.append(("hello then a record", first + client.data_to_send()))
    return cases


def _comparable(status: int, headers: aiohttp.typedefs.LooseHeaders, body: bytes) -> tuple:
    kept = sorted((k.lower(), v) for k, v in dict(headers).items() if k.lower() != "date")
    return status, kept, body


async def _upgrade(url: str, cookie: str | None) -> tuple:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if cookie is not None:
        headers["Cookie"] = f"sid={cookie}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(url, headers=headers) as response:
            return _comparable(response.status, response.headers, await response.read())


async def _post(url: str, body: bytes) -> tuple:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(url, data=body) as response:
            return _comparable(response.status, response.headers, await response.read())


async def test_no_partial_or_broken_hello_opens_a_websocket() -> None:
    events: list[Event] = []
    settings = Settings(password=PASSWORD)
    async with serving(settings, events) as (_, address), asyncio.timeout(60):
        url = f"http://127.0.0.1:{address.port}/"
        unclaimed = await _upgrade(url, None)
        assert unclaimed[0] != 101
        for name, hello in [("empty", b""), *_bad_hellos()]:
            token = base64.urlsafe_b64encode(hello).rstrip(b"=").decode()
            assert await _upgrade(url, token) == unclaimed, name
    assert not [e for e in events if isinstance(e, SessionUp)]
    rejected = [e for e in events if isinstance(e, TunnelRejected)]
    assert any("incomplete hello" in e.reason for e in rejected)
    assert any("after the hello" in e.reason for e in rejected)


async def test_no_partial_or_broken_hello_opens_an_http_session() -> None:
    events: list[Event] = []
    settings = Settings(password=PASSWORD)
    keys = EnvelopeKeys(derive_master_key(PASSWORD))
    async with serving(settings, events) as (_, address), asyncio.timeout(60):
        url = f"http://127.0.0.1:{address.port}/"
        for name, hello in _bad_hellos():
            body = keys.seal_request(Request(Kind.OPEN, new_session_id()), hello)
            unclaimed = await _post(url, os.urandom(len(body)))
            assert await _post(url, body) == unclaimed, name
    assert not [e for e in events if isinstance(e, SessionUp)]


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_a_whole_hello_still_opens_a_session(transport: str) -> None:
    events: list[Event] = []
    settings = Settings(password=PASSWORD)
    async with serving(settings, events) as (_, address), asyncio.timeout(10):
        url = f"http://127.0.0.1:{address.port}/"
        if transport == "ws":
            token = base64.urlsafe_b64encode(_hello()).rstrip(b"=").decode()
            headers = {"Cookie": f"sid={token}"}
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                async with http.ws_connect(url, headers=headers) as ws:
                    assert (await ws.receive()).type is aiohttp.WSMsgType.BINARY
        else:
            keys = EnvelopeKeys(derive_master_key(PASSWORD))
            body = keys.seal_request(Request(Kind.OPEN, new_session_id()), _hello())
            async with aiohttp.ClientSession(auto_decompress=False) as http:
                async with http.post(url, data=body) as response:
                    assert response.headers["Content-Type"] == "application/octet-stream"
        for _ in range(100):
            if any(isinstance(e, SessionUp) for e in events):
                break
            await asyncio.sleep(0.01)
    assert [e.transport for e in events if isinstance(e, SessionUp)] == [transport]
