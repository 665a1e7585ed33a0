"""Datagram flows through a real session: UDP targets, the policy, the budget, the limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator

import pytest

from flyway_core import Address, DatagramsUnsupported, TargetError
from flyway_core.client import ClientTunnel
from flyway_core.flow import DATAGRAM_BUDGET, TunnelFlow
from flyway_core.memory import MemoryTransport
from flyway_core.policy import Policy
from flyway_core.protocol import (
    ClientConnection,
    Feature,
    ReplayCache,
    ServerConnection,
)
from flyway_core.server import FlywayServer
from flyway_core.session import Session
from flyway_core.settings import ServerLimits, Settings
from flyway_core.stats import Stats
from flyway_core.testing import joined_tunnel
from flyway_core.testing.pairs import wait_for
from flyway_core.testing.ports import udp_port_free
from flyway_core.testing.udp import UdpEcho, udp_echo

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def echo() -> AsyncIterator[UdpEcho]:
    async with udp_echo() as running:
        yield running


def _collect(flow: TunnelFlow) -> asyncio.Queue[tuple[Address, bytes]]:
    queue: asyncio.Queue[tuple[Address, bytes]] = asyncio.Queue()
    flow.on_datagram = lambda source, data: queue.put_nowait((source, data))
    return queue


async def test_datagrams_reach_a_udp_target_and_its_replies_come_back_whole(echo: UdpEcho) -> None:
    target = echo.address
    sizes = [0, 1, 512, 1472, 9000, 65507]  # 65507: the largest UDP payload over IPv4
    payloads = [os.urandom(size) for size in sizes] * 5
    async with (
        joined_tunnel(Settings(password="pw")) as tunnel,
        tunnel.open_flow(origin="test") as flow,
    ):
        replies = _collect(flow)
        await flow.accepted()
        for payload in payloads:
            assert flow.send(target, payload)
            source, data = await asyncio.wait_for(replies.get(), 5)  # one at a time: no loss
            assert source == target
            assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
        assert (flow.sent, flow.received, flow.dropped) == (len(payloads), len(payloads), 0)


async def test_an_ipv6_target_is_reached_from_the_same_flow(echo: UdpEcho) -> None:
    async with (
        udp_echo("::1") as echo6,
        joined_tunnel(Settings(password="pw")) as tunnel,
        tunnel.open_flow() as flow,
    ):
        replies = _collect(flow)
        flow.send(echo.address, b"over IPv4")
        assert await asyncio.wait_for(replies.get(), 5) == (echo.address, b"over IPv4")
        flow.send(echo6.address, b"over IPv6")
        assert await asyncio.wait_for(replies.get(), 5) == (echo6.address, b"over IPv6")


async def test_a_named_destination_is_resolved_by_the_server(echo: UdpEcho) -> None:
    target = echo.address
    async with (
        joined_tunnel(Settings(password="pw")) as tunnel,
        tunnel.open_flow() as flow,
    ):
        replies = _collect(flow)
        flow.send(Address("localhost", target.port), b"by name")
        source, data = await asyncio.wait_for(replies.get(), 5)
    assert data == b"by name"
    assert source.port == target.port  # the reply names the address that answered


async def test_replies_come_only_from_where_the_flow_sent(echo: UdpEcho) -> None:
    target = echo.address
    async with (
        joined_tunnel(Settings(password="pw")) as tunnel,
        tunnel.open_flow() as flow,
    ):
        replies = _collect(flow)
        flow.send(target, b"hello")
        await asyncio.wait_for(replies.get(), 5)
        relay = echo.sources[0]  # the server's UDP socket, as the target saw it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.sendto(b"unsolicited", relay)
            await asyncio.sleep(0.3)
        flow.send(target, b"still works")
        assert await asyncio.wait_for(replies.get(), 5) == (target, b"still works")
        assert replies.empty()  # the stranger's datagram never arrived


@pytest.mark.parametrize(
    "denied",
    [
        "127.0.0.1",
        "localhost",  # a name that resolves to a denied address
        "0.0.0.0",  # reaches this host's own services: judged as loopback
        "::ffff:0.0.0.0",
        "0",  # a name for 0.0.0.0
        "::ffff:127.0.0.1",
    ],
)
async def test_the_policy_drops_datagrams_to_denied_destinations(
    echo: UdpEcho, denied: str
) -> None:
    settings = Settings(password="pw", policy=Policy.parse(deny=["127.0.0.1"]))
    async with udp_echo("127.0.0.2") as allowed:
        async with joined_tunnel(settings) as tunnel, tunnel.open_flow() as flow:
            replies = _collect(flow)
            flow.send(Address(denied, echo.address.port), b"to a denied address")
            flow.send(allowed.address, b"to an allowed one")  # the relay works: it answers
            assert await asyncio.wait_for(replies.get(), 5) == (
                allowed.address,
                b"to an allowed one",
            )
            await asyncio.sleep(0.2)
            assert replies.empty()
    assert echo.sources == []  # nothing reached the denied address


async def test_an_ipv4_mapped_destination_gets_its_reply(echo: UdpEcho) -> None:
    async with joined_tunnel(Settings(password="pw")) as tunnel, tunnel.open_flow() as flow:
        replies = _collect(flow)
        flow.send(Address(f"::ffff:{echo.address.host}", echo.address.port), b"mapped")
        assert await asyncio.wait_for(replies.get(), 5) == (echo.address, b"mapped")


def _server_session(tunnel: ClientTunnel) -> Session:
    transport = tunnel.transport
    assert isinstance(transport, MemoryTransport)
    door = transport.door
    assert isinstance(door, FlywayServer)
    (session,) = door.sessions
    return session


async def test_multicast_and_broadcast_are_dropped_at_the_server() -> None:
    async with joined_tunnel(Settings(password="pw")) as tunnel, tunnel.open_flow() as flow:
        await flow.accepted()
        for host in ("224.0.0.251", "255.255.255.255", "ff02::fb"):
            flow.send(Address(host, 5353), b"anyone?")
        server = _server_session(tunnel)
        (server_flow,) = server._flows.values()
        await wait_for(lambda: server_flow.dropped == 3)


async def test_flows_ended_with_end_are_forgotten_on_both_ends() -> None:
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        client = await tunnel.wait_ready()
        await client.started.wait()
        server = _server_session(tunnel)
        for _ in range(20):  # a client that ends its flows (End, never Reset)
            async with tunnel.open_flow() as flow:
                await flow.accepted()
                client.end_stream(flow.stream_id)
                await flow.wait_closed()  # the server resets it once its side is over
        await wait_for(lambda: server.open_streams == 0 and client.open_streams == 0)
        assert server._conn.open_streams == client._conn.open_streams == 0  # nothing kept
        assert server.stats.streams == 0


async def test_a_failing_datagram_handler_ends_its_flow_and_nothing_else(
    echo: UdpEcho, echo_server: Address
) -> None:
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        async with tunnel.open_flow() as flow:

            def broken(source: Address, data: bytes) -> None:
                raise ValueError("a bug in a listener")

            flow.on_datagram = broken
            flow.send(echo.address, b"x")
            await asyncio.wait_for(flow.wait_closed(), 5)
        async with tunnel.open_stream(echo_server) as stream:  # the session lives on
            await stream.write(b"still here")
            stream.end()
            assert await stream.read() == b"still here"


async def test_a_flow_that_ends_closes_its_sockets_and_frees_its_slot(echo: UdpEcho) -> None:
    target = echo.address
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        session = await tunnel.wait_ready()
        for _ in range(3):
            async with tunnel.open_flow() as flow:
                replies = _collect(flow)
                flow.send(target, b"x")
                await asyncio.wait_for(replies.get(), 5)
            assert flow.closed
        await wait_for(lambda: session.open_streams == 0)
        relays = set(echo.sources)
        assert len(relays) == 3  # each flow had a socket of its own
        for _, port in relays:  # and each was closed with its flow: the port is free again
            await wait_for(lambda port=port: udp_port_free(port, "0.0.0.0"))  # type: ignore[misc]


async def test_one_flow_too_many_is_refused_as_busy() -> None:
    settings = Settings(password="pw", limits=ServerLimits(streams_per_session=1))
    async with joined_tunnel(settings) as tunnel:
        async with tunnel.open_flow() as first:
            await first.accepted()
            async with tunnel.open_flow() as second:
                with pytest.raises(TargetError, match="busy"):
                    await second.accepted()
        server = _server_session(tunnel)
        await wait_for(lambda: server.stats.streams == 0 == tunnel.stats.streams)


async def test_a_server_without_flows_is_named_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flyway_core.server.SUPPORTED_FEATURES", Feature.BOUND_ADDRESS)
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        with pytest.raises(DatagramsUnsupported, match="does not relay datagrams"):
            async with tunnel.open_flow():
                pass


class StalledCarrier:
    """A carrier that takes the first send and then never finishes another."""

    keepalive = True

    def __init__(self) -> None:
        self.sent = 0

    def send_nowait(self, data: bytes) -> bool:
        return False

    async def send(self, data: bytes) -> None:
        self.sent += len(data)
        await asyncio.Event().wait()

    async def receive(self) -> bytes:
        await asyncio.Event().wait()
        return b""

    async def close(self) -> None:
        pass


def _started_client() -> ClientConnection:
    master, now = bytes(32), time.time()
    client = ClientConnection(master, now=now, features=Feature.DATAGRAM_FLOWS, padding=b"")
    server = ServerConnection(
        master, ReplayCache(), now=now, features=Feature.DATAGRAM_FLOWS, padding=b""
    )
    server.receive_data(client.data_to_send(), now)
    client.receive_data(server.data_to_send(), now)
    return client


async def test_datagrams_over_the_budget_are_dropped_and_streams_keep_their_room() -> None:
    carrier = StalledCarrier()
    session = Session(_started_client(), carrier, peer="test", emit=lambda e: None, stats=Stats())
    run = asyncio.create_task(session.run())
    await asyncio.sleep(0)
    flow = session.open_flow("test")
    stream = session.open_stream(Address("192.0.2.1", 80), "test")
    target = Address("192.0.2.53", 53)
    datagram = bytes(8192)
    for _ in range(1000):  # 8 MB at a carrier that takes nothing
        flow.send(target, datagram)
        await asyncio.sleep(0)
    assert flow.dropped > 0
    assert flow.sent * len(datagram) <= 2 * DATAGRAM_BUDGET + len(datagram)  # held: bounded
    # The streams' queue room lost at most what the carrier took before it stalled.
    assert session.queued <= DATAGRAM_BUDGET + len(datagram)
    assert session.send_window(stream.stream_id) > 0
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
