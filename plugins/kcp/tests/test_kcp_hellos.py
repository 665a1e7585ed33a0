"""What hellos cost the server: a known one no crypto, a flood a bounded share of each batch."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import flyway_kcp.server
import pytest
from flyway_kcp.server import HELLOS_PER_BATCH, KcpServer
from intermediaries.lossy_udp import Impairment
from kcp_pairs import kcp_pair

from flyway_core.events import TunnelRejected
from flyway_core.testing.pairs import hashed_exchange

CLEAN = Impairment()
STRANGER = ("127.0.0.1", 40000)


class _Counted:
    """Wraps the endpoint's hello sealer and counts the opens (each costs two HKDFs)."""

    def __init__(self, sealer: Any) -> None:
        self._sealer = sealer
        self.opens = 0

    def open(self, packet: bytes) -> bytes:
        self.opens += 1
        opened: bytes = self._sealer.open(packet)
        return opened


def _count_opens(endpoint: KcpServer) -> _Counted:
    counted = _Counted(endpoint._hellos)
    endpoint._hellos = counted  # type: ignore[assignment]
    return counted


async def test_a_live_sessions_hello_said_again_costs_no_crypto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with kcp_pair(up=CLEAN, down=CLEAN, record=3) as pair:
        async with asyncio.timeout(20):
            await hashed_exchange(pair.local("echo"), 10_000)
        endpoint, hello = pair.endpoint, pair.relay.recorded[0]
        counted = _count_opens(endpoint)
        derived: list[bytes] = []
        keys_for = flyway_kcp.server.keys_for
        monkeypatch.setattr(
            flyway_kcp.server, "keys_for", lambda m, h: derived.append(h) or keys_for(m, h)
        )
        for _ in range(100):
            endpoint._datagram(hello, STRANGER)
        endpoint._batch()
        assert (counted.opens, derived) == (0, [])  # before: 100 opens and 100 key derivations
        assert endpoint.repeated_hellos >= 100 and len(endpoint.sessions) == 1


async def test_a_flood_of_hellos_opens_at_most_the_budget_per_batch() -> None:
    async with kcp_pair(up=CLEAN, down=CLEAN) as pair:
        endpoint = pair.endpoint
        counted = _count_opens(endpoint)
        for _ in range(3):
            for _ in range(1000):
                endpoint._datagram(os.urandom(150), STRANGER)
            endpoint._batch()
        assert counted.opens == 3 * HELLOS_PER_BATCH  # before: 3,000
        async with asyncio.timeout(20):  # the session still works, and no stranger got one
            sent, echoed, _, _ = await hashed_exchange(pair.local("echo"), 100_000)
        assert sent == echoed and len(endpoint.sessions) == 1


async def test_an_ended_sessions_hello_replayed_is_dropped_quietly() -> None:
    async with kcp_pair(up=CLEAN, down=CLEAN, record=3) as pair:
        async with asyncio.timeout(20):
            await hashed_exchange(pair.local("echo"), 10_000)
        endpoint, hello = pair.endpoint, pair.relay.recorded[0]
        (ended,) = endpoint.sessions
        endpoint.sessions[ended].shutdown()
        counted, events = _count_opens(endpoint), len(pair.server_events)
        repeated = endpoint.repeated_hellos
        for _ in range(50):
            endpoint._datagram(hello, STRANGER)
        endpoint._batch()
        rejected = [e for e in pair.server_events[events:] if isinstance(e, TunnelRejected)]
        assert rejected == []  # before: one TunnelRejected per replay
        assert counted.opens == 0 and endpoint.repeated_hellos - repeated == 50
        assert ended not in endpoint.sessions
