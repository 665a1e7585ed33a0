"""The streaming probe's verdict holds when the client's machine is busy. A client whose event
loop stalls just as the probe's answer arrives (against a real server in its own process,
so only the client stalls) reads both envelopes at once, which timing alone takes for a
buffering path (before: streaming was judged off for five minutes, and a test flaked). The
verdict rests on the client acknowledging the first envelope, and a result that only timing
could decide is probed again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from flyway_http_post.client import HttpPostCarrier
from flyway_http_post.envelope import EnvelopeKeys, Kind, RequestFlags
from flyway_procs import flyway

from flyway_core import Address, ServerURL, Settings
from flyway_core.events import Event
from flyway_core.protocol import derive_master_key
from flyway_core.testing import forwarding, free_port, hashed_exchange, wait_for, wait_port

KEYS = EnvelopeKeys(derive_master_key("pw"))


@pytest.mark.parametrize("stall", [1.0, 2.5], ids=["stall under the wait", "stall past it"])
async def test_a_client_that_stalls_during_the_probe_still_finds_the_path_streams(
    echo_server: Address, monkeypatch: pytest.MonkeyPatch, stall: float
) -> None:
    stalled: list[float] = []
    start = HttpPostCarrier.start

    def start_stalling(carrier: HttpPostCarrier) -> None:
        post = carrier._post

        @contextlib.asynccontextmanager
        async def stalling(body: bytes, timeout: float) -> AsyncIterator[aiohttp.ClientResponse]:
            opened = KEYS.open_request(body)
            probe = opened is not None and opened[0].kind is Kind.POLL
            probe = probe and RequestFlags.PROBE in opened[0].flags  # type: ignore[index]
            async with post(body, timeout) as response:
                if probe and not stalled:  # the first probe's answer has begun to come
                    stalled.append(stall)
                    time.sleep(stall)  # noqa: ASYNC251 (the point: nothing else here runs)
                yield response

        carrier._post = stalling
        start(carrier)

    monkeypatch.setattr(HttpPostCarrier, "start", start_stalling)
    port = free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "pw", "-q"]):
        await asyncio.to_thread(wait_port, port)
        events: list[Event] = []
        url = ServerURL("http", "127.0.0.1", port)
        async with forwarding(url, "http", Settings(password="pw"), [echo_server], events) as (
            tunnel,
            ports,
        ):
            session = tunnel.session
            assert session is not None
            carrier = session._carrier
            assert isinstance(carrier, HttpPostCarrier)
            await wait_for(lambda: carrier.probes_decided > 0, timeout=20)
            assert stalled == [stall]
            assert carrier.streaming is True
            async with asyncio.timeout(30):
                sent, echoed, *_ = await hashed_exchange(ports[echo_server], 1 << 20)
            assert sent == echoed
