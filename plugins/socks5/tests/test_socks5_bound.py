"""BND.ADDR/BND.PORT: replies carry the server's local address toward the target.

The target records the peer of each connection it takes; the SOCKS reply must name the same
address, in-process over a memory tunnel and with real flyway processes over ws and http.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
from flyway_socks5 import socks4, socks5

from flyway_core import Address
from flyway_core.testing import free_port
from flyway_core.testing.processes import flyway_processes


class PeerRecorder:
    """An echo target on 127.0.0.1 that remembers who connected (its peer's address)."""

    def __init__(self) -> None:
        self.peers: list[Address] = []
        self.address = Address("127.0.0.1", 0)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        self.peers.append(Address(host, port))
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[PeerRecorder]:
    target = PeerRecorder()
    server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    target.address = Address("127.0.0.1", server.sockets[0].getsockname()[1])
    async with server:
        yield target


async def _socks5_connect(proxy: Address, target: Address) -> tuple[int, Address]:
    """CONNECT through ``proxy``; return the reply code and BND.ADDR:BND.PORT, echo checked."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        ip = ipaddress.IPv4Address(target.host).packed
        writer.write(b"\x05\x01\x00\x01" + ip + target.port.to_bytes(2, "big"))
        version, code, _, kind = await reader.readexactly(4)
        assert version == 5
        packed = await reader.readexactly(4 if kind == 1 else 16)
        port = int.from_bytes(await reader.readexactly(2), "big")
        if code == 0:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
        return code, Address(str(ipaddress.ip_address(packed)), port)
    finally:
        writer.close()


def test_socks5_reply_carries_ipv4_and_ipv6_and_falls_back_to_zeros() -> None:
    v4 = socks5.reply(0, Address("192.0.2.9", 40000))
    assert v4 == bytes([5, 0, 0, 1, 192, 0, 2, 9]) + (40000).to_bytes(2, "big")
    v6 = socks5.reply(0, Address("2001:db8::9", 443))
    assert v6 == bytes([5, 0, 0, 4]) + ipaddress.IPv6Address("2001:db8::9").packed + b"\x01\xbb"
    zeros = bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert socks5.reply(0) == socks5.reply(0, Address("not-an-ip.example", 1)) == zeros


def test_socks4_reply_carries_only_an_ipv4_address() -> None:
    assert socks4.reply(0x5A, Address("192.0.2.9", 40000)) == bytes(
        [0, 0x5A, 0x9C, 0x40, 192, 0, 2, 9]
    )
    assert socks4.reply(0x5A, Address("2001:db8::9", 443)) == bytes([0, 0x5A, 0, 0, 0, 0, 0, 0])
    assert socks4.reply(0x5A) == bytes([0, 0x5A, 0, 0, 0, 0, 0, 0])


async def test_socks5_reply_names_the_address_the_target_saw(
    proxy: Address, recorder: PeerRecorder
) -> None:
    async with asyncio.timeout(10):
        code, bound = await _socks5_connect(proxy, recorder.address)
    assert code == 0
    assert recorder.peers == [bound]
    assert bound.port != 0


async def test_socks4_reply_names_the_address_the_target_saw(
    proxy: Address, recorder: PeerRecorder
) -> None:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        ip = ipaddress.IPv4Address(recorder.address.host).packed
        writer.write(b"\x04\x01" + recorder.address.port.to_bytes(2, "big") + ip + b"\0")
        answer = await reader.readexactly(8)
        writer.close()
    assert answer[:2] == b"\x00\x5a"
    bound = Address(str(ipaddress.IPv4Address(answer[4:])), int.from_bytes(answer[2:4], "big"))
    assert recorder.peers == [bound]


@pytest.mark.parametrize("transport", [["-w"], []], ids=["ws", "http"])
async def test_real_processes_report_the_bound_address_over_each_transport(
    recorder: PeerRecorder, transport: list[str]
) -> None:
    server_port, socks_port = free_port(), free_port()
    async with flyway_processes({"FLYWAY_PASSWORD": "a long test password"}) as start:
        await start(f"127.0.0.1:{server_port}", port=server_port)
        await start(*transport, "-D", str(socks_port), f"127.0.0.1:{server_port}", port=socks_port)
        proxy = Address("127.0.0.1", socks_port)
        async with asyncio.timeout(15):
            while (answer := await _socks5_connect(proxy, recorder.address))[0]:
                await asyncio.sleep(0.1)  # until the session is up
    bound = answer[1]
    assert recorder.peers == [bound]
    assert bound.host == "127.0.0.1" and bound.port != 0
