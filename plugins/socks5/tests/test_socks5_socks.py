"""SOCKS5 and SOCKS4a through a memory tunnel: python-socks as the client, then raw bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from flyway_core import Address
from flyway_core.testing import free_port

StartProxy = Callable[..., Any]  # the start_proxy fixture (conftest.py)

# An outcome per target, and the SOCKS5 reply code a client must see for it.
FAILURES = [
    pytest.param("127.0.0.1", "closed port", 0x05, id="refused"),
    pytest.param("no-such-name.invalid", 80, 0x04, id="name-not-found"),
    pytest.param("unreachable.test", 80, 0x04, id="unreachable"),
    pytest.param("network-unreachable.test", 80, 0x03, id="network-unreachable"),
    pytest.param("timed-out.test", 80, 0x06, id="timed-out"),
    pytest.param("not-allowed.test", 80, 0x02, id="not-allowed"),
    pytest.param("busy.test", 80, 0x01, id="busy"),
]


async def _echo_through(url: str, host: str, port: int, payload: bytes) -> bytes:
    sock = await Proxy.from_url(url, rdns=True).connect(host, port, timeout=5)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(payload)
    writer.write_eof()
    echoed = await reader.read(-1)
    writer.close()
    return echoed


async def test_socks5_connect_to_an_ipv4_address(proxy: Address, echo_server: Address) -> None:
    async with asyncio.timeout(10):
        url = f"socks5://{proxy}"
        assert await _echo_through(url, echo_server.host, echo_server.port, b"v4") == b"v4"


async def test_socks5_connect_to_a_domain_name_resolved_by_the_server(
    proxy: Address, echo_server: Address, server_only_name: str, server_only: Any
) -> None:
    # A name this side cannot resolve (the fixture checked): only the server could.
    async with asyncio.timeout(10):
        url = f"socks5://{proxy}"
        assert await _echo_through(url, server_only_name, echo_server.port, b"name") == b"name"
    assert server_only.dials == 1


async def test_socks5_connect_to_an_ipv6_address(proxy: Address) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(-1))
        writer.close()

    try:
        server = await asyncio.start_server(echo, "::1", 0, family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with server, asyncio.timeout(10):
        port = server.sockets[0].getsockname()[1]
        assert await _echo_through(f"socks5://{proxy}", "::1", port, b"v6") == b"v6"


@pytest.mark.parametrize(("host", "port", "code"), FAILURES)
async def test_socks5_reports_why_the_server_could_not_connect(
    proxy: Address, host: str, port: int | str, code: int
) -> None:
    port = free_port() if port == "closed port" else port
    async with asyncio.timeout(10):
        with pytest.raises(ProxyError) as caught:
            await Proxy.from_url(f"socks5://{proxy}", rdns=True).connect(host, int(port))
    assert caught.value.error_code == code


@pytest.mark.parametrize("url", ["socks5://{}", "socks4://{}"])
async def test_two_hundred_parallel_connections_each_arrive_byte_for_byte(
    proxy: Address, echo_server: Address, url: str
) -> None:
    async def one() -> tuple[bytes, bytes]:
        payload = os.urandom(32 << 10)
        echoed = await _echo_through(url.format(proxy), echo_server.host, echo_server.port, payload)
        return hashlib.sha256(payload).digest(), hashlib.sha256(echoed).digest()

    async with asyncio.timeout(30):
        results = await asyncio.gather(*(one() for _ in range(200)))
    assert all(sent == echoed for sent, echoed in results)


async def test_socks5_with_the_right_credentials_connects(
    start_proxy: StartProxy, echo_server: Address, server_only_name: str, server_only: Any
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    async with asyncio.timeout(10):
        url = f"socks5://alice:s3cret@{proxy}"
        assert await _echo_through(url, server_only_name, echo_server.port, b"in") == b"in"
    assert server_only.dials == 1


async def _exchange(proxy: Address, data: bytes, *, eof: bool = False) -> bytes:
    """Send raw bytes; return everything the proxy sent back before closing."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(data)
    if eof:
        writer.write_eof()
    try:
        return await reader.read(-1)
    finally:
        writer.close()


async def test_wrong_credentials_get_status_1_and_a_close(start_proxy: StartProxy) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    async with asyncio.timeout(10):
        answer = await _exchange(proxy, b"\x05\x01\x02" + b"\x01\x05alice\x05wrong")
    assert answer == b"\x05\x02\x01\x01"


async def test_a_port_with_credentials_refuses_clients_without(start_proxy: StartProxy) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    async with asyncio.timeout(10):
        assert await _exchange(proxy, b"\x05\x01\x00") == b"\x05\xff"
        socks4 = b"\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00"
        assert await _exchange(proxy, socks4) == b"\x00\x5b" + bytes(6)


async def test_a_port_without_credentials_offers_no_auth_only(proxy: Address) -> None:
    async with asyncio.timeout(10):
        assert await _exchange(proxy, b"\x05\x01\x02") == b"\x05\xff"


async def test_socks4a_sends_the_name_to_the_server(
    proxy: Address, echo_server: Address, server_only_name: str, server_only: Any
) -> None:
    port = echo_server.port.to_bytes(2, "big")
    name = server_only_name.encode()
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"\x04\x01" + port + b"\x00\x00\x00\x01user\x00" + name + b"\x00hello")
        answer = await reader.readexactly(8)
        assert answer[:2] == b"\x00\x5a"
        assert answer[4:] == b"\x7f\x00\x00\x01" and answer[2:4] != b"\0\0"  # the server's end
        assert await reader.readexactly(5) == b"hello"
        writer.close()
    assert server_only.dials == 1


async def test_socks4_rejects_what_the_server_could_not_reach(proxy: Address) -> None:
    port = free_port().to_bytes(2, "big")
    async with asyncio.timeout(10):
        answer = await _exchange(proxy, b"\x04\x01" + port + b"\x7f\x00\x00\x01\x00")
    assert answer == b"\x00\x5b" + bytes(6)


REQUEST = b"\x05\x01\x00"  # the greeting a client without credentials sends
BAD_INPUT = [
    pytest.param(REQUEST + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x07", id="bind"),
    pytest.param(REQUEST + b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50", b"\x08", id="atyp-5"),
    pytest.param(REQUEST + b"\x05\x01\x00\x03\x00\x00\x50", b"\x01", id="empty-domain"),
    pytest.param(REQUEST + b"\x05\x01\x00\x03\x05a b\x00c\x00\x50", b"\x01", id="odd-domain"),
    pytest.param(REQUEST + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", b"\x01", id="port-0"),
]


def _reply(code: bytes) -> bytes:
    return b"\x05\x00\x05" + code + b"\x00\x01" + bytes(6)


@pytest.mark.parametrize(("data", "code"), BAD_INPUT)
async def test_a_bad_request_gets_its_reply_and_a_close(
    proxy: Address, echo_server: Address, data: bytes, code: bytes
) -> None:
    async with asyncio.timeout(10):
        assert await _exchange(proxy, data) == _reply(code)
        # nothing else is affected
        assert await _echo_through(f"socks5://{proxy}", "localhost", echo_server.port, b"ok")


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        pytest.param(b"\x05", b"", id="truncated-greeting"),
        pytest.param(b"\x05\x03\x00", b"", id="truncated-methods"),
        pytest.param(REQUEST + b"\x05\x01\x00\x01\x7f", b"\x05\x00", id="truncated-request"),
        pytest.param(REQUEST + b"\x04\x01\x00\x01" + bytes(6), b"\x05\x00", id="wrong-version"),
        pytest.param(b"\x04\x01\x00\x50\x7f\x00", b"", id="truncated-socks4"),
        pytest.param(
            b"\x04\x01\x00\x50\x00\x00\x00\x01" + b"u" * 300, b"\x00\x5b" + bytes(6), id="long-id"
        ),
    ],
)
async def test_a_truncated_or_wrong_handshake_is_closed(
    proxy: Address, echo_server: Address, data: bytes, answer: bytes
) -> None:
    async with asyncio.timeout(10):
        # exactly what the server owes before the break (nothing for a truncated greeting)
        assert await _exchange(proxy, data, eof=True) == answer
        # nothing else is affected: the next client on the port connects as usual
        assert await _echo_through(f"socks5://{proxy}", "localhost", echo_server.port, b"ok")


async def test_a_greeting_that_never_ends_is_closed_at_the_deadline(
    start_proxy: StartProxy, echo_server: Address
) -> None:
    proxy = await start_proxy(handshake_timeout=0.3)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"\x05\x05\x00")  # five methods announced, one sent
        started = loop.time()
        assert await reader.read(-1) == b""
        assert 0.2 < loop.time() - started < 2
        writer.close()
        assert await _echo_through(f"socks5://{proxy}", "localhost", echo_server.port, b"ok")


SOCKS4_REJECTED = b"\x00\x5b" + bytes(6)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", id="bind"),
        pytest.param(b"\x04\x01\x00\x00\x7f\x00\x00\x01\x00", id="port-0"),
        pytest.param(b"\x04\x01\x00\x50\x00\x00\x00\x00\x00", id="address-0.0.0.0"),
        pytest.param(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a b!\x00", id="bad-4a-name"),
        pytest.param(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", id="empty-4a-name"),
        pytest.param(
            b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"a" * 256 + b"\x00", id="long-name"
        ),
    ],
)
async def test_a_socks4_request_flyway_cannot_serve_gets_0x5b_and_a_close(
    proxy: Address, echo_server: Address, request_: bytes
) -> None:
    async with asyncio.timeout(10):
        assert await _exchange(proxy, request_) == SOCKS4_REJECTED
        assert await _echo_through(f"socks4://{proxy}", "127.0.0.1", echo_server.port, b"ok")


async def test_a_subnegotiation_of_another_version_gets_01_01_and_a_close(
    start_proxy: StartProxy, echo_server: Address
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    async with asyncio.timeout(10):
        # the right credentials, under version 2 of a sub-negotiation that has only 1
        answer = await _exchange(proxy, b"\x05\x01\x02" + b"\x02\x05alice\x06s3cret")
        assert answer == b"\x05\x02" + b"\x01\x01"
        url = f"socks5://alice:s3cret@{proxy}"
        assert await _echo_through(url, "127.0.0.1", echo_server.port, b"ok") == b"ok"
