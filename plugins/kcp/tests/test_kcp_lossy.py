"""Real transfers through the lossy relay: 5% loss and 30 ms each way, every byte hashed."""

from __future__ import annotations

import asyncio
import hashlib
import os

from intermediaries.lossy_udp import Impairment, LossyUdpRelay
from kcp_pairs import KcpPair, kcp_pair

from flyway_core.testing.pairs import hashed_exchange

BIG = 20 << 20  # the 20 MB each way


async def _upload(pair: KcpPair, size: int) -> tuple[str, str]:
    local = pair.local("sink")
    reader, writer = await asyncio.open_connection(local.host, local.port)
    digest = hashlib.sha256()
    remaining = size
    while remaining:
        data = os.urandom(min(1 << 16, remaining))
        digest.update(data)
        writer.write(data)
        await writer.drain()
        remaining -= len(data)
    writer.write_eof()
    answer = (await reader.read()).decode()
    writer.close()
    return digest.hexdigest(), answer


async def _download(pair: KcpPair, size: int) -> tuple[str, str]:
    local = pair.local("source")
    reader, writer = await asyncio.open_connection(local.host, local.port)
    writer.write(f"{size}\n".encode())
    await writer.drain()
    digest = hashlib.sha256()
    received = 0
    while data := await reader.read(1 << 16):
        digest.update(data)
        received += len(data)
    writer.close()
    assert received == size
    return digest.hexdigest(), pair.source.sent[-1]


async def test_20_mb_each_way_arrive_whole(lossy: KcpPair) -> None:
    async with asyncio.timeout(90):
        sent, seen = await _upload(lossy, BIG)
        assert sent == seen
        got, sent = await _download(lossy, BIG)
        assert got == sent
    assert lossy.relay.up.tally.lost > 0 and lossy.relay.down.tally.lost > 0  # it was lossy
    assert len(lossy.endpoint.sessions) == 1  # one conversation carried it all


async def test_both_directions_at_once(lossy: KcpPair) -> None:
    async with asyncio.timeout(60):
        sent, echoed, size, received = await hashed_exchange(lossy.local("echo"), 6 << 20)
    assert (sent, size) == (echoed, received)


async def test_50_parallel_streams(lossy: KcpPair) -> None:
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            *(hashed_exchange(lossy.local("echo"), 100_000 + 997 * i) for i in range(50))
        )
    for sent, echoed, size, received in results:
        assert (sent, size) == (echoed, received)
    assert len(lossy.endpoint.sessions) == 1


async def test_half_close_leaves_the_other_direction_open(lossy: KcpPair) -> None:
    """The client ends its side; the sink still answers after reading to that end."""
    async with asyncio.timeout(30):
        sent, answer = await _upload(lossy, 300_000)
    assert answer == sent


async def test_jitter_reordering_and_duplicates_change_nothing_either() -> None:
    rough = Impairment(loss=0.05, delay=0.03, jitter=0.01, reorder=0.03, duplicate=0.03)
    async with kcp_pair(up=rough, down=rough, seed=7) as pair:
        async with asyncio.timeout(60):
            sent, echoed, size, received = await hashed_exchange(pair.local("echo"), 4 << 20)
        assert (sent, size) == (echoed, received)
        assert pair.relay.up.tally.duplicated and pair.relay.down.tally.duplicated
        assert pair.endpoint.dropped > 0  # the duplicates: refused by the replay window


def test_each_direction_of_the_relay_draws_its_own_seeded_randomness() -> None:
    """What one direction loses does not depend on how busy the other was: a seed repeats."""
    rough = Impairment(loss=0.3, jitter=0.01, duplicate=0.1, reorder=0.1)
    quiet, busy = (LossyUdpRelay(("127.0.0.1", 9), up=rough, down=rough, seed=5) for _ in "ab")
    for i in range(300):
        quiet.up.push(i.to_bytes(2, "big"), 0.0)
        busy.up.push(i.to_bytes(2, "big"), 0.0)
        busy.down.push(b"answer", 0.0)  # only one relay's other direction carries anything
    assert sorted(quiet.up.heap) == sorted(busy.up.heap)  # before: one generator for both
    assert quiet.up.tally.lost == busy.up.tally.lost > 0
