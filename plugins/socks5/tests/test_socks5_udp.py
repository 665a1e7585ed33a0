"""SOCKS5 UDP ASSOCIATE with real clients: PySocks, socksify (dante-client), and raw datagrams.

Every test proves its datagrams went through flyway: the client tunnel's byte count
grows by what was sent, which direct traffic never touches.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import logging
import os
import re
import signal
import socket
import struct
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rrset
import pytest
import socks
from flyway_socks5 import Socks5Listener
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from flyway_core import Address, Settings
from flyway_core.client import ClientTunnel
from flyway_core.flow import DATAGRAM_BUDGET
from flyway_core.memory import MemoryTransport
from flyway_core.policy import Policy
from flyway_core.protocol import Feature
from flyway_core.server import FlywayServer
from flyway_core.testing import free_port, joined_tunnel, listening
from flyway_core.testing.pairs import wait_for
from flyway_core.testing.ports import udp_port_free, wait_port
from flyway_core.testing.processes import FLYWAY, flyway_processes
from flyway_core.testing.udp import UdpEcho, udp_echo
from flyway_core.udp import UdpEndpoint, open_udp

pytestmark = pytest.mark.asyncio


@dataclass
class UdpProxy:
    """A -D listener over a memory tunnel, and that tunnel (to see what went through it)."""

    address: Address
    tunnel: ClientTunnel

    @property
    def sent(self) -> int:
        return self.tunnel.stats.sent


@contextlib.asynccontextmanager
async def _udp_proxy(settings: Settings) -> AsyncIterator[UdpProxy]:
    async with joined_tunnel(settings) as tunnel:
        async with listening(Socks5Listener(Address("127.0.0.1", 0)), tunnel) as proxy:
            yield UdpProxy(proxy, tunnel)


@pytest.fixture
async def udp_proxy() -> AsyncIterator[UdpProxy]:
    async with _udp_proxy(Settings(password="pw")) as proxy:
        yield proxy


@pytest.fixture
async def echo() -> AsyncIterator[UdpEcho]:
    async with udp_echo() as running:
        yield running


def _pysocks(proxy: Address, *, rdns: bool = False) -> socks.socksocket:
    sock = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.set_proxy(socks.SOCKS5, proxy.host, proxy.port, rdns=rdns)
    sock.settimeout(5)
    return sock


def _pysocks_exchange(
    proxy: Address, target: tuple[str, int], payloads: list[bytes], *, rdns: bool
) -> list[tuple[bytes, tuple[str, int]]]:
    """Send each payload through a PySocks UDP socket and read its answer (in a thread)."""
    with _pysocks(proxy, rdns=rdns) as sock:
        answers = []
        for payload in payloads:
            sock.sendto(payload, target)
            answers.append(sock.recvfrom(70000))
        return answers


@pytest.mark.parametrize("rdns", [False, True], ids=["local-address", "remote-dns"])
async def test_pysocks_datagrams_echo_back_byte_for_byte(
    udp_proxy: UdpProxy, echo: UdpEcho, rdns: bool
) -> None:
    # PySocks names its own address as 0.0.0.0:port, or with remote DNS as the domain
    # "0"; both mean "this client", and both are taken.
    payloads = [os.urandom(size) for size in (1, 100, 1400, 8000, 32000, 65000)] * 3
    before = udp_proxy.sent
    target = ("127.0.0.1", echo.address.port)
    answers = await asyncio.to_thread(
        _pysocks_exchange, udp_proxy.address, target, payloads, rdns=rdns
    )
    for payload, (data, source) in zip(payloads, answers, strict=True):
        assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
        assert source == target  # the header of each answer names the target
    assert udp_proxy.sent - before == sum(map(len, payloads))  # all of it through flyway


async def test_a_name_is_resolved_at_the_server(udp_proxy: UdpProxy, echo: UdpEcho) -> None:
    answers = await asyncio.to_thread(
        _pysocks_exchange, udp_proxy.address, ("localhost", echo.address.port), [b"?"], rdns=True
    )
    assert answers == [(b"?", ("127.0.0.1", echo.address.port))]


class DnsResponder:
    """A DNS server on UDP that answers every A question with 192.0.2.7."""

    def __init__(self) -> None:
        self.endpoint: UdpEndpoint | None = None
        self.questions: list[str] = []

    def answer(self, data: bytes, host: str, port: int) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        name = query.question[0].name
        self.questions.append(name.to_text())
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.7"))
        assert self.endpoint is not None
        self.endpoint.send(response.to_wire(), host, port)


def _resolve_through(proxy: Address, server: tuple[str, int], name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    with _pysocks(proxy) as sock:
        sock.sendto(query.to_wire(), server)
        data, _ = sock.recvfrom(4096)
    response = dns.message.from_wire(data)
    assert response.id == query.id
    return response


async def test_a_dns_query_over_socks5_udp_gets_its_answer(udp_proxy: UdpProxy) -> None:
    responder = DnsResponder()
    responder.endpoint = await open_udp("127.0.0.1", 0, responder.answer)
    try:
        server = responder.endpoint.address
        before = udp_proxy.sent
        response = await asyncio.to_thread(
            _resolve_through, udp_proxy.address, server, "www.example.test"
        )
    finally:
        responder.endpoint.close()
    assert [rrset.to_text() for rrset in response.answer] == ["www.example.test. 60 IN A 192.0.2.7"]
    assert responder.questions == ["www.example.test."]
    assert udp_proxy.sent > before


_SOCKSIFY_CLIENT = """
import hashlib, os, socket, sys
port = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
for size in (10, 1000, 20000):
    payload = os.urandom(size)
    sock.sendto(payload, ("127.0.0.1", port))
    data, _ = sock.recvfrom(65535)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest(), size
print("ok")
"""


async def _socksify(proxy: Address, tmp_path: Path, script: str, *args: str) -> bytes:
    """Run ``python -c script args`` under socksify, routed through ``proxy``; its stdout."""
    config = tmp_path / "socks.conf"
    config.write_text(
        textwrap.dedent(f"""
        route {{
          from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = {proxy.port}
          proxyprotocol: socks_v5
          command: connect udpassociate
          method: none
        }}
        """)
    )
    # Without the route, or with socksify's automatic LAN routes, the datagrams to
    # 127.0.0.1 would go direct and be answered all the same: the tests' check of the
    # tunnel's byte count is what proves they went through flyway.
    env = dict(os.environ, SOCKS_CONF=str(config), SOCKS_AUTOADD_LANROUTES="no")
    process = await asyncio.create_subprocess_exec(
        "socksify",
        sys.executable,
        "-c",
        script,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode(errors="replace")
    return out


async def test_socksify_sends_a_plain_programs_datagrams_through_flyway(
    udp_proxy: UdpProxy, echo: UdpEcho, tmp_path: Path
) -> None:
    before = udp_proxy.sent
    out = await _socksify(udp_proxy.address, tmp_path, _SOCKSIFY_CLIENT, str(echo.address.port))
    assert out == b"ok\n"
    assert udp_proxy.sent - before == 10 + 1000 + 20000
    assert len(echo.sources) == 3 and len(set(echo.sources)) == 1  # one relay socket


# A plain program asking a DNS server (a UDP socket, no SOCKS in it): one question, its answer.
_SOCKSIFY_DNS = """
import socket, sys
import dns.message
query = dns.message.make_query("socksified.example.test", "A")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
sock.sendto(query.to_wire(), ("127.0.0.1", int(sys.argv[1])))
data, _ = sock.recvfrom(4096)
response = dns.message.from_wire(data)
assert response.id == query.id
print(len(query.to_wire()))
print(*(rrset.to_text() for rrset in response.answer), sep="\\n")
"""


async def test_socksify_carries_a_plain_programs_dns_question_and_answer(
    udp_proxy: UdpProxy, tmp_path: Path
) -> None:
    responder = DnsResponder()
    responder.endpoint = await open_udp("127.0.0.1", 0, responder.answer)
    try:
        port = str(responder.endpoint.address[1])
        before = udp_proxy.sent
        out = await _socksify(udp_proxy.address, tmp_path, _SOCKSIFY_DNS, port)
    finally:
        responder.endpoint.close()
    size, answer = out.decode().splitlines()
    assert answer == "socksified.example.test. 60 IN A 192.0.2.7"
    assert responder.questions == ["socksified.example.test."]
    assert udp_proxy.sent - before == int(size)  # the question went through flyway


# --- the association, byte by byte --------------------------------------------------------


def _header(target: Address, frag: int = 0) -> bytes:
    return bytes([0, 0, frag, 1]) + socket.inet_aton(target.host) + struct.pack(">H", target.port)


@contextlib.asynccontextmanager
async def _associate(
    proxy: Address, declared: bytes = b"\x01\0\0\0\0\0\0"
) -> AsyncIterator[tuple[bytes, asyncio.StreamWriter]]:
    """A UDP ASSOCIATE naming ``declared`` (ATYP, address, port); yields the reply."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x03\x00" + declared)
        yield await reader.readexactly(10), writer
    finally:
        writer.close()


class Client:
    """A raw UDP socket speaking SOCKS UDP to the relay the association named."""

    def __init__(self, relay: tuple[str, int]) -> None:
        self.relay = relay
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()
        self.endpoint: UdpEndpoint | None = None

    async def open(self) -> Client:
        self.endpoint = await open_udp("127.0.0.1", 0, self._got)
        return self

    def _got(self, data: bytes, host: str, port: int) -> None:
        assert (host, port) == self.relay  # answers leave from the advertised address
        self.answers.put_nowait(data)

    def send(self, packet: bytes) -> None:
        assert self.endpoint is not None
        self.endpoint.send(packet, *self.relay)

    async def answer(self, timeout: float = 5.0) -> bytes | None:
        try:
            return await asyncio.wait_for(self.answers.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()


def _relay(reply: bytes) -> tuple[str, int]:
    assert reply[:4] == b"\x05\x00\x00\x01", reply.hex()
    return socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0]


async def test_the_relay_is_advertised_on_the_control_connections_address(
    udp_proxy: UdpProxy, echo: UdpEcho
) -> None:
    async with _associate(udp_proxy.address) as (reply, _):
        relay = _relay(reply)
        assert relay[0] == "127.0.0.1" and relay[1] != 0
        client = await Client(relay).open()
        client.send(_header(echo.address) + b"ping")
        assert await client.answer() == _header(echo.address) + b"ping"
        client.close()


Bad = Callable[[Address], bytes]
BAD_DATAGRAMS: list[tuple[str, Bad]] = [
    ("fragment", lambda target: _header(target, frag=1) + b"part one"),
    ("truncated header", lambda target: _header(target)[:7]),
    ("unknown address type", lambda target: b"\0\0\0\x09" + _header(target)[4:] + b"x"),
    ("empty domain", lambda target: b"\0\0\0\x03\x00" + struct.pack(">H", target.port)),
    ("odd domain", lambda target: b"\0\0\0\x03\x04a b!" + struct.pack(">H", target.port)),
    ("domain past the end", lambda target: b"\0\0\0\x03\x40short"),
    ("port 0", lambda target: _header(Address(target.host, 0)) + b"x"),
    ("three bytes", lambda target: b"\0\0\0"),
]


@pytest.mark.parametrize(("why", "bad"), BAD_DATAGRAMS, ids=[why for why, _ in BAD_DATAGRAMS])
async def test_a_bad_datagram_is_dropped_counted_and_the_association_lives_on(
    udp_proxy: UdpProxy, echo: UdpEcho, caplog: pytest.LogCaptureFixture, why: str, bad: Bad
) -> None:
    caplog.set_level(logging.DEBUG, logger="flyway_socks5")
    async with _associate(udp_proxy.address) as (reply, writer):
        client = await Client(_relay(reply)).open()
        client.send(_header(echo.address) + b"first")  # locks the association to us
        assert await client.answer() is not None
        client.send(bad(echo.address))
        client.send(_header(echo.address) + b"after")
        assert await client.answer() == _header(echo.address) + b"after"
        client.close()
        writer.close()
        await wait_for(lambda: "association over" in caplog.text)
    assert len(echo.sources) == 2  # the bad one never left
    reason = "fragment" if why == "fragment" else "bad header"
    assert f"1 dropped {{'{reason}': 1}}" in caplog.text


async def test_datagrams_from_anyone_but_the_associated_client_are_dropped(
    udp_proxy: UdpProxy, echo: UdpEcho
) -> None:
    async with _associate(udp_proxy.address) as (reply, _):
        relay = _relay(reply)
        client, stranger = await Client(relay).open(), await Client(relay).open()
        client.send(_header(echo.address) + b"mine")  # the first datagram locks the port
        assert await client.answer() == _header(echo.address) + b"mine"
        stranger.send(_header(echo.address) + b"theirs")
        assert await stranger.answer(timeout=0.5) is None
        elsewhere = Client(relay)  # another address altogether, even on its first datagram
        elsewhere.endpoint = await open_udp("127.0.0.2", 0, elsewhere._got)
        elsewhere.send(_header(echo.address) + b"from 127.0.0.2")
        assert await elsewhere.answer(timeout=0.5) is None
        assert len(echo.sources) == 1
        for each in (client, stranger, elsewhere):
            each.close()


async def test_a_declared_port_admits_only_that_port(udp_proxy: UdpProxy, echo: UdpEcho) -> None:
    relay_probe = await Client(("127.0.0.1", 1)).open()
    assert relay_probe.endpoint is not None
    port = relay_probe.endpoint.address[1]
    relay_probe.close()
    declared = b"\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port)
    async with _associate(udp_proxy.address, declared) as (reply, _):
        other = await Client(_relay(reply)).open()  # came first, from another port
        other.send(_header(echo.address) + b"not declared")
        assert await other.answer(timeout=0.5) is None
        declared_client = Client(_relay(reply))
        declared_client.endpoint = await open_udp("127.0.0.1", port, declared_client._got)
        declared_client.send(_header(echo.address) + b"declared")
        assert await declared_client.answer() == _header(echo.address) + b"declared"
        other.close()
        declared_client.close()


async def test_the_association_ends_with_its_control_connection(
    udp_proxy: UdpProxy, echo: UdpEcho
) -> None:
    async with _associate(udp_proxy.address) as (reply, writer):
        relay = _relay(reply)
        client = await Client(relay).open()
        client.send(_header(echo.address) + b"x")
        assert await client.answer() is not None
        session = udp_proxy.tunnel.session
        assert session is not None and session.open_streams == 1  # the flow
        writer.close()
        await wait_for(lambda: session.open_streams == 0)
        await wait_for(lambda: udp_port_free(relay[1]))  # the relay socket is closed too
        client.close()


async def test_the_association_ends_with_the_tunnels_session(
    udp_proxy: UdpProxy, echo: UdpEcho
) -> None:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(
            udp_proxy.address.host, udp_proxy.address.port
        )
        writer.write(b"\x05\x01\x00" + b"\x05\x03\x00\x01" + bytes(6))
        assert await reader.readexactly(2) == b"\x05\x00"
        relay = _relay(await reader.readexactly(10))
        client = await Client(relay).open()
        client.send(_header(echo.address) + b"x")
        assert await client.answer() is not None
        transport = udp_proxy.tunnel.transport
        assert isinstance(transport, MemoryTransport) and isinstance(transport.door, FlywayServer)
        (server_session,) = transport.door.sessions
        await server_session.close()  # the server ends the session: the flow goes with it
        assert await reader.read(-1) == b""  # the control connection is closed
        await wait_for(lambda: udp_port_free(relay[1]))  # and the relay socket
        client.close()
        writer.close()


async def test_a_server_without_datagram_flows_answers_command_not_supported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("flyway_core.server.SUPPORTED_FEATURES", Feature.BOUND_ADDRESS)
    async with (
        _udp_proxy(Settings(password="pw")) as proxy,
        _associate(proxy.address) as (reply, _),
    ):
        assert reply[:2] == b"\x05\x07"


async def test_the_servers_policy_applies_to_every_datagram(echo: UdpEcho) -> None:
    settings = Settings(password="pw", policy=Policy.parse(deny=["127.0.0.1"]))
    async with _udp_proxy(settings) as proxy, _associate(proxy.address) as (reply, _):
        client = await Client(_relay(reply)).open()
        async with udp_echo("127.0.0.2") as allowed:
            client.send(_header(echo.address) + b"denied")
            client.send(_header(allowed.address) + b"allowed")  # the association works
            assert await client.answer() == _header(allowed.address) + b"allowed"
            assert await client.answer(timeout=0.3) is None
        client.close()
    assert echo.sources == []


def _pysocks_when_up(
    proxy: Address, target: tuple[str, int], payloads: list[bytes]
) -> list[tuple[bytes, tuple[str, int]]]:
    """``_pysocks_exchange``, retried while the tunnel's session is still coming up."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return _pysocks_exchange(proxy, target, payloads, rdns=False)
        except (socks.ProxyError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("transport", [["-w"], []], ids=["ws", "http"])
async def test_real_processes_carry_udp_over_each_transport(
    echo: UdpEcho, transport: list[str]
) -> None:
    server_port, socks_port = free_port(), free_port()
    payloads = [os.urandom(size) for size in (1, 512, 1400, 9000, 60000)] * 4
    target = ("127.0.0.1", echo.address.port)
    async with flyway_processes({"FLYWAY_PASSWORD": "a long test password"}) as start:
        await start(f"127.0.0.1:{server_port}", port=server_port)
        await start(*transport, "-D", str(socks_port), f"127.0.0.1:{server_port}", port=socks_port)
        answers = await asyncio.to_thread(
            _pysocks_when_up, Address("127.0.0.1", socks_port), target, payloads
        )
    for payload, (data, source) in zip(payloads, answers, strict=True):
        assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
        assert source == target  # the SOCKS UDP header flyway put before each answer
    assert len(echo.sources) == len(payloads)


# --- datagrams never stall streams ---------------------------------------------------------

TRANSFER = 20 << 20  # bytes of the TCP transfer beside the flood
FLOOD_DATAGRAM = 60000


def _flood(relay: tuple[str, int], sink: Address, stop: threading.Event, sent: list[int]) -> None:
    """Send datagrams for ``sink`` to the relay as fast as they go until ``stop``; count them."""
    packet = _header(sink) + bytes(FLOOD_DATAGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        while not stop.is_set():
            try:
                sock.sendto(packet, relay)
                sent[0] += 1
            except BlockingIOError:  # the relay's socket buffer is full: the kernel drops too
                time.sleep(0.0005)


async def _hashing_server() -> asyncio.Server:
    """A TCP server that reads to the end, then answers with the SHA-256 of what it read."""

    async def digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hashed = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            hashed.update(chunk)
        writer.write(hashed.digest())
        writer.close()

    return await asyncio.start_server(digest, "127.0.0.1", 0)


async def _send_hashed(proxy: Address, target: Address, payload: bytes) -> bytes:
    """Send ``payload`` through a SOCKS5 CONNECT to ``target``; return what it answered."""
    sock = await Proxy.from_url(f"socks5://{proxy}").connect(target.host, target.port, timeout=5)
    reader, writer = await asyncio.open_connection(sock=sock)
    for start in range(0, len(payload), 1 << 20):
        writer.write(payload[start : start + (1 << 20)])
        await writer.drain()
    writer.write_eof()
    answer = await reader.read(-1)
    writer.close()
    return answer


_DROPS = re.compile(rb"UDP association over: (\d+) datagrams out, (\d+) dropped (\{.*\})")


async def test_a_datagram_flood_past_the_budget_never_stalls_a_stream_beside_it(
    tmp_path: Path,
) -> None:
    # Real processes over a real carrier (ws on loopback TCP). While the 20 MB transfer
    # runs, the server is stopped (SIGSTOP) for a while: the client's carrier falls
    # behind, so the flood's datagrams queue for it, go over the budget and are dropped,
    # and once it runs again the transfer completes whole. The client's -vv log is where
    # its association reports what it dropped and why.
    server_port, socks_port = free_port(), free_port()
    proxy = Address("127.0.0.1", socks_port)
    payload = os.urandom(TRANSFER)
    stop, flooded = threading.Event(), [0]
    sunk = 0

    def sink_got(data: bytes, host: str, port: int) -> None:
        nonlocal sunk
        sunk += 1

    sink = await open_udp("127.0.0.1", 0, sink_got)
    hasher = await _hashing_server()
    target = Address("127.0.0.1", hasher.sockets[0].getsockname()[1])
    log = tmp_path / "client.log"
    env = {**os.environ, "FLYWAY_PASSWORD": "a long test password", "COLUMNS": "400"}
    async with flyway_processes(env) as start:
        server = await start(f"127.0.0.1:{server_port}", port=server_port)
        with log.open("wb") as stderr:
            client = await asyncio.create_subprocess_exec(
                *FLYWAY, "-vv", "-w", "-D", str(socks_port), f"127.0.0.1:{server_port}",
                env=env, stderr=stderr, stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        try:
            async with asyncio.timeout(60):
                await asyncio.to_thread(wait_port, socks_port)
                while True:  # until the session is up
                    with contextlib.suppress(ProxyError, OSError):
                        assert await _send_hashed(proxy, target, b"up") == _sha(b"up")
                        break
                    await asyncio.sleep(0.1)
                async with _associate(proxy) as (reply, control):
                    relay, to = _relay(reply), Address(*sink.address)
                    flood = asyncio.create_task(asyncio.to_thread(_flood, relay, to, stop, flooded))
                    await wait_for(lambda: sunk > 0)  # the flood goes through
                    transfer = asyncio.create_task(_send_hashed(proxy, target, payload))
                    server.send_signal(signal.SIGSTOP)
                    try:  # 100 budgets offered while the carrier cannot move
                        offered = flooded[0] + 100 * DATAGRAM_BUDGET // FLOOD_DATAGRAM
                        await wait_for(lambda: flooded[0] > offered, timeout=30)
                    finally:
                        server.send_signal(signal.SIGCONT)
                    received = await transfer
                    assert not flood.done()  # the flood ran for the whole transfer
                    stop.set()
                    await flood
                    control.close()
                    await wait_for(lambda: _DROPS.search(log.read_bytes()) is not None)
        finally:
            stop.set()
            sink.close()
            hasher.close()
            client.terminate()
            await client.wait()
    assert received == _sha(payload)  # whole, and hash-identical
    found = _DROPS.search(log.read_bytes())
    assert found is not None
    out, why = int(found[1]), ast.literal_eval(found[3].decode())
    assert why.get("over the datagram budget", 0) > 0, why  # dropped there, and counted
    assert out > 0 and sunk <= out  # the rest went through the tunnel


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
