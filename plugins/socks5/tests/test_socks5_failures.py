"""Real failures, not a test dialer's: a target that never answers, and real unreachable hosts.

A target that never answers is a listening socket whose accept queue is full: Linux
drops every further SYN, so the server's connect hangs as it would on a silent
network. The client gives up after ``CONNECT_TIMEOUT`` (lowered here), answers
0x06 / 504, and resets the stream, so the server forgets its dial. Unreachable
hosts and networks are real too: in a network namespace of its own (``unshare
--net``) a route of type ``unreachable`` makes connect() fail with EHOSTUNREACH, and
a network without any route fails with ENETUNREACH.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from flyway_socks5 import Socks5Listener, base

from flyway_core import Address, Settings
from flyway_core.client import ClientTunnel
from flyway_core.memory import MemoryTransport
from flyway_core.server import FlywayServer
from flyway_core.testing import joined_tunnel, listening, ports
from flyway_core.testing.pairs import wait_for
from flyway_core.upstream import TARGET_TIMEOUT

REQUEST = b"\x05\x01\x00"  # the greeting a client without credentials sends


@pytest.fixture
def blackhole() -> Iterator[Address]:
    """A port on 127.0.0.1 that takes no more connections: connects to it hang."""
    with ports.blackhole() as port:
        yield Address("127.0.0.1", port)


@pytest.fixture
async def proxy_and_door(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Address, FlywayServer]]:
    """A -D listener whose client gives up on an unanswered connect after 0.3 s."""
    monkeypatch.setattr(base, "CONNECT_TIMEOUT", 0.3)
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        async with listening(Socks5Listener(Address("127.0.0.1", 0)), tunnel) as proxy:
            yield proxy, _door(tunnel)


def _door(tunnel: ClientTunnel) -> FlywayServer:
    assert isinstance(tunnel.transport, MemoryTransport)
    door = tunnel.transport.door
    assert isinstance(door, FlywayServer)
    return door


def _open_streams(door: FlywayServer) -> int:
    return sum(session.open_streams for session in door.sessions)


async def _exchange(proxy: Address, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(data)
        return await reader.read(-1)
    finally:
        writer.close()


def _connect(target: Address) -> bytes:
    host = socket.inet_aton(target.host)
    return REQUEST + b"\x05\x01\x00\x01" + host + target.port.to_bytes(2, "big")


async def test_a_target_that_never_answers_is_0x06_to_a_socks5_client(
    proxy_and_door: tuple[Address, FlywayServer], blackhole: Address
) -> None:
    proxy, door = proxy_and_door
    async with asyncio.timeout(10):
        answer = await _exchange(proxy, _connect(blackhole))
    assert answer == b"\x05\x00" + b"\x05\x06\x00\x01" + bytes(6)  # TTL expired, a close
    assert door.sessions  # the session lives on


async def test_a_target_that_never_answers_is_0x5b_to_a_socks4_client(
    proxy_and_door: tuple[Address, FlywayServer], blackhole: Address
) -> None:
    proxy, _ = proxy_and_door
    request = b"\x04\x01" + blackhole.port.to_bytes(2, "big") + socket.inet_aton("127.0.0.1")
    async with asyncio.timeout(10):
        assert await _exchange(proxy, request + b"\x00") == b"\x00\x5b" + bytes(6)


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_a_target_that_never_answers_is_504_to_an_http_proxy_client(
    proxy_and_door: tuple[Address, FlywayServer], blackhole: Address, method: str
) -> None:
    proxy, _ = proxy_and_door
    target = f"127.0.0.1:{blackhole.port}"
    line = f"CONNECT {target}" if method == "CONNECT" else f"GET http://{target}/"
    async with asyncio.timeout(10):
        answer = await _exchange(proxy, f"{line} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), answer
    assert b"\r\nConnection: close" in head and body == b"flyway: timed out\n", answer


async def test_the_server_drops_the_dial_of_a_stream_the_client_gave_up_on(
    proxy_and_door: tuple[Address, FlywayServer], blackhole: Address
) -> None:
    proxy, door = proxy_and_door
    async with asyncio.timeout(10):
        assert (await _exchange(proxy, _connect(blackhole)))[3] == 0x06
        # the client's Reset reached the server: its stream (and the dial) must go now,
        # well before the server's own deadline for the dial would end it
        await wait_for(lambda: _open_streams(door) == 0, timeout=TARGET_TIMEOUT / 4)


# Run in a network namespace of its own: a loopback, a route that says "unreachable"
# for 192.0.2.0/24 (TEST-NET-1), and no route at all to 10.0.0.0/8.
_IN_NAMESPACE = """
import asyncio, json, socket, subprocess
from flyway_core import Address, Settings
from flyway_core.testing import joined_tunnel
from flyway_socks5 import Socks5Listener

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "route", "add", "unreachable", "192.0.2.0/24"], check=True)

async def ask(proxy, data):
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return answer

async def main():
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        listener = Socks5Listener(Address("127.0.0.1", 0))
        bound = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(listener.serve(tunnel, started=bound.set_result))
        proxy = await asyncio.wait_for(bound, 5)
        seen = {}
        for host in ("192.0.2.1", "10.0.0.1"):
            socks5 = b"\\x05\\x01\\x00\\x05\\x01\\x00\\x01" + socket.inet_aton(host) + b"\\x00\\x50"
            socks4 = b"\\x04\\x01\\x00\\x50" + socket.inet_aton(host) + b"\\x00"
            http = f"CONNECT {host}:80 HTTP/1.1\\r\\nHost: {host}:80\\r\\n\\r\\n".encode()
            seen[host] = [
                (await ask(proxy, socks5)).hex(),
                (await ask(proxy, socks4)).hex(),
                (await ask(proxy, http)).split(b"\\r\\n")[0].decode(),
            ]
        task.cancel()
        print(json.dumps(seen))

asyncio.run(main())
"""


def test_real_unreachable_hosts_and_networks_get_their_codes() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _IN_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    failure = "0000000000000000"  # SOCKS4 0x5B, and the zeros of a failure
    assert seen == {
        "192.0.2.1": [  # EHOSTUNREACH: host unreachable
            "0500" + "05040001000000000000",
            failure.replace("0000", "005b", 1),
            "HTTP/1.1 502 Bad Gateway",
        ],
        "10.0.0.1": [  # ENETUNREACH: network unreachable
            "0500" + "05030001000000000000",
            failure.replace("0000", "005b", 1),
            "HTTP/1.1 502 Bad Gateway",
        ],
    }
