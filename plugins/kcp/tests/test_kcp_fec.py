"""Forward error correction: groups rebuilt from any K of K + M, garbage ignored, memory bounded."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from flyway_kcp.config import KcpConfig, parse_fec
from flyway_kcp.fec import KEEP, FecDecoder, FecEncoder
from flyway_kcp.handshake import seal_hello
from flyway_kcp.stats import TALLY
from intermediaries.lossy_udp import Impairment
from kcp_pairs import KcpPair, kcp_pair

from flyway_core import ConfigError, Settings
from flyway_core.protocol import ClientConnection
from flyway_core.protocol.crypto import derive_master_key
from flyway_core.testing.pairs import hashed_exchange


def test_any_k_of_a_group_rebuild_its_data() -> None:
    rng = random.Random(3)
    encoder, decoder = FecEncoder(10, 3), FecDecoder(10, 3)
    sent = [os.urandom(rng.randrange(1, 1300)) for _ in range(10)]
    shards = [s for payload in sent for s in encoder.shards(payload)]
    assert len(shards) == 13
    kept = rng.sample(range(13), 10)  # three lost, whichever they are
    got = [
        bytes(p)
        for i in sorted(kept, key=lambda _: rng.random())
        for p in decoder.payloads(shards[i])
    ]
    assert sorted(got) == sorted(sent)
    assert decoder.recovered == sum(1 for i in range(10) if i not in kept)


def test_each_payload_comes_out_once_and_duplicates_add_nothing() -> None:
    encoder, decoder = FecEncoder(4, 2), FecDecoder(4, 2)
    sent = [os.urandom(100) for _ in range(8)]
    shards = [s for payload in sent for s in encoder.shards(payload)]
    got = [bytes(p) for s in shards + shards for p in decoder.payloads(s)]
    assert got == sent


def test_too_few_shards_rebuild_nothing_and_data_still_passes() -> None:
    encoder, decoder = FecEncoder(4, 2), FecDecoder(4, 2)
    sent = [os.urandom(50) for _ in range(4)]
    shards = [s for payload in sent for s in encoder.shards(payload)]
    got = [bytes(p) for s in (shards[0], shards[4]) for p in decoder.payloads(s)]
    assert got == [sent[0]] and decoder.recovered == 0


def test_garbage_shards_yield_nothing_and_memory_stays_bounded() -> None:
    decoder = FecDecoder(10, 3)
    rng = random.Random(5)
    for _ in range(5000):
        decoder.payloads(rng.randbytes(rng.randrange(0, 40)))
    assert len(decoder._groups) <= KEEP


def test_the_fec_option() -> None:
    assert parse_fec("10,3") == (10, 3)
    assert parse_fec("off") == (0, 0)
    assert KcpConfig().fec == (10, 3)
    for bad in ("ten", "10", "0,3"):
        with pytest.raises(ConfigError, match="--kcp-fec"):
            KcpConfig(fec=parse_fec(bad))


async def test_without_fec_the_lossy_link_still_delivers_every_byte() -> None:
    settings = Settings(password="pw", options={"kcp_fec": "off"})
    async with kcp_pair(settings=settings) as pair:
        async with asyncio.timeout(60):
            sent, echoed, size, received = await hashed_exchange(pair.local("echo"), 3 << 20)
        assert (sent, size) == (echoed, received)
        (carrier,) = pair.endpoint.sessions.values()
        assert carrier.recovered == 0 and carrier.retransmits > 0  # KCP resent what was lost
        assert carrier.retransmits >= carrier.timeouts  # fast resends are counted too
        assert TALLY.snapshot()["server"]["resent_bytes"] >= carrier.output.resent_bytes > 0


async def test_with_fec_the_server_follows_the_client_and_rebuilds_losses(lossy: KcpPair) -> None:
    async with asyncio.timeout(60):
        sent, echoed, size, received = await hashed_exchange(lossy.local("echo"), 3 << 20)
    assert (sent, size) == (echoed, received)
    (carrier,) = lossy.endpoint.sessions.values()
    assert carrier.recovered > 0


async def test_a_clean_link_gets_no_parity_and_a_lossy_one_does() -> None:
    clean = Impairment(delay=0.005)
    async with kcp_pair(up=clean, down=clean) as pair:
        async with asyncio.timeout(30):  # small: a saturated CPU's late acks cost resends too
            for _ in range(4):
                await hashed_exchange(pair.local("echo"), 64 << 10)
        (carrier,) = pair.endpoint.sessions.values()
        assert carrier.output.resends == 0 and carrier.output.lossy_until == 0.0
    async with kcp_pair() as pair:  # 5% loss: resends switch parity on
        async with asyncio.timeout(30):
            await hashed_exchange(pair.local("echo"), 2 << 20)
        (carrier,) = pair.endpoint.sessions.values()
        assert carrier.output.resends > 0 and carrier.output.lossy_until > 0  # ours is on
        assert carrier.recovered > 0  # and the client's parity rebuilt what was lost


def test_parity_is_capped_at_the_data_and_the_group_size() -> None:
    assert KcpConfig(fec=(16, 16)).fec == (16, 16)
    for bad in ((1, 127), (10, 11), (17, 16)):
        with pytest.raises(ConfigError, match="no more parity than data"):
            KcpConfig(fec=bad)


async def test_the_server_drops_a_hello_asking_for_more_parity_than_it_allows() -> None:
    master = derive_master_key("pw")
    async with kcp_pair(up=Impairment(), down=Impairment()) as pair:
        endpoint = pair.endpoint
        live, dropped = dict(endpoint.sessions), endpoint.dropped
        for fec in ((1, 127), (17, 16)):  # before: sessions with 127 (16) parity per datagram
            hello = ClientConnection(master, now=time.time()).hello()
            endpoint._datagram(seal_hello(master, hello, fec), ("127.0.0.1", 40000))
            endpoint._batch()
        assert endpoint.sessions == live and endpoint.dropped - dropped == 2
        hello = ClientConnection(master, now=time.time()).hello()  # what it allows it takes
        endpoint._datagram(seal_hello(master, hello, (16, 16)), ("127.0.0.1", 40000))
        assert len(endpoint.sessions) == len(live) + 1
