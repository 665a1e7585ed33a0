"""What a scanner or an attacker on the path gets from the UDP port: nothing, and no effect."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

from flyway_kcp import KcpTransport
from intermediaries.lossy_udp import Impairment
from kcp_pairs import KcpPair, kcp_pair

from flyway_core import Settings
from flyway_core.events import SessionUp
from flyway_core.testing.pairs import hashed_exchange, serving

CLEAN = Impairment()


def _strangers(recorded: list[bytes], rng: random.Random) -> list[bytes]:
    """Garbage, a bare KCP segment, replays, truncations and bit flips of real datagrams."""
    conv = rng.getrandbits(32)
    push = struct.pack("<IBBHIIII", conv, 81, 0, 1024, 0, 0, 0, 5) + b"hello"  # a PUSH, unsealed
    out = [b"", b"\x00", os.urandom(1), push, b"GET / HTTP/1.1\r\n\r\n"]
    out += [os.urandom(rng.randrange(1, 1500)) for _ in range(40)]
    out += recorded  # every datagram the client sent so far, replayed as captured
    for datagram in recorded[:10]:
        out.append(datagram[: rng.randrange(len(datagram))])  # truncated
        flipped = bytearray(datagram)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
        out.append(datagram[:16] + os.urandom(len(datagram) - 16))  # a live id, forged body
    return out


async def _exchange(pair: KcpPair, size: int) -> None:
    sent, echoed, _, _ = await hashed_exchange(pair.local("echo"), size)
    assert sent == echoed


async def test_strangers_get_no_reply_and_change_nothing() -> None:
    async with kcp_pair(up=CLEAN, down=CLEAN, record=200) as pair:
        async with asyncio.timeout(30):
            await _exchange(pair, 200_000)
            endpoint = pair.endpoint
            before = {sid: c.output.address for sid, c in endpoint.sessions.items()}
            dropped = endpoint.dropped
            ups = sum(isinstance(e, SessionUp) for e in pair.server_events)
            assert pair.relay.recorded and len(before) == 1

            strangers = _strangers(pair.relay.recorded, random.Random(13))
            scanners = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
            try:
                for i, datagram in enumerate(strangers):
                    scanner = scanners[i % len(scanners)]
                    scanner.sendto(datagram, ("127.0.0.1", pair.server.bound.port))
                await _exchange(pair, 200_000)  # still works: and gives them time to answer
                for scanner in scanners:
                    scanner.setblocking(False)
                    try:
                        reply = scanner.recv(65536)
                    except BlockingIOError:
                        continue
                    raise AssertionError(f"a stranger got {len(reply)} bytes back")
            finally:
                for scanner in scanners:
                    scanner.close()

        after = {sid: c.output.address for sid, c in endpoint.sessions.items()}
        assert after == before  # no new session, and no replay moved the old one
        assert endpoint.dropped - dropped == len(strangers)
        assert sum(isinstance(e, SessionUp) for e in pair.server_events) == ups


async def test_a_flood_of_garbage_from_many_ports_allocates_nothing() -> None:
    async with kcp_pair(up=CLEAN, down=CLEAN) as pair:
        endpoint = pair.endpoint
        sessions = dict(endpoint.sessions)
        scanners = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
        try:
            for _ in range(50):
                for scanner in scanners:
                    scanner.sendto(os.urandom(120), ("127.0.0.1", pair.server.bound.port))
            async with asyncio.timeout(20):
                await _exchange(pair, 100_000)
        finally:
            for scanner in scanners:
                scanner.close()
        assert endpoint.sessions == sessions


async def test_a_hello_replayed_to_a_restarted_server_gets_a_fresh_server_key() -> None:
    """A server that forgot the hello (restarted) takes it again, but seals under a new key."""
    async with kcp_pair(up=CLEAN, down=CLEAN, record=20) as pair:
        async with asyncio.timeout(20):
            await _exchange(pair, 50_000)
        hello, original = pair.relay.recorded[0], pair.relay.recorded_down[0][:8]
        fresh_transport = KcpTransport()
        async with serving(
            Settings(password="pw"), [], transports=lambda s: {"kcp": fresh_transport}
        ) as (_, bound):
            replayer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            replayer.settimeout(0)
            try:
                replayer.sendto(hello, ("127.0.0.1", bound.port))
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(5):
                    answer = await loop.sock_recv(replayer, 65536)
            finally:
                replayer.close()
        assert answer[:8] != original  # another server salt: another key, no nonce reused
