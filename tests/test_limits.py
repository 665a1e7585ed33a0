"""Limits on sessions and streams, with typed refusals, and descriptors kept for the front door."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
import time

import aiohttp
import flyway_websocket
import pytest
from flyway_procs import FLYWAY

from flyway_core import Address, ServerURL, Settings, TargetError
from flyway_core.events import DialFailed, Event, SessionUp
from flyway_core.protocol import ClientConnection, ResetReason, derive_master_key
from flyway_core.rlimits import HEADROOM
from flyway_core.settings import ServerLimits
from flyway_core.testing import forwarding, free_port, joined_tunnel, serving, wait_for, wait_port


async def test_a_stream_over_the_session_limit_is_reset_as_busy(echo_server: Address) -> None:
    settings = Settings(password="pw", limits=ServerLimits(streams_per_session=2))
    async with joined_tunnel(settings) as tunnel, asyncio.timeout(10):
        async with (
            tunnel.open_stream(echo_server) as first,
            tunnel.open_stream(echo_server) as second,
        ):
            await first.accepted()
            await second.accepted()
            async with tunnel.open_stream(echo_server) as third:
                with pytest.raises(TargetError, match="busy") as caught:
                    await third.accepted()
                assert caught.value.reason == ResetReason.BUSY
            await first.write(b"still")
            first.end()
            assert await first.read() == b"still"
        async with tunnel.open_stream(echo_server) as again:  # the slots are free again
            await again.accepted()


@pytest.mark.parametrize("transport", ["ws", "http"])
@pytest.mark.parametrize(
    "limits",
    [ServerLimits(sessions_per_address=1), ServerLimits(sessions=1)],
    ids=["per address", "in all"],
)
async def test_a_session_over_the_limit_gets_a_sealed_busy_close(
    transport: str, limits: ServerLimits, echo_server: Address
) -> None:
    server_events: list[Event] = []
    first_events: list[Event] = []
    second_events: list[Event] = []
    settings = Settings(password="pw", limits=limits)
    async with serving(settings, server_events) as (_, address), asyncio.timeout(20):
        url = ServerURL("http", "127.0.0.1", address.port)
        client = Settings(password="pw")
        async with forwarding(url, transport, client, [echo_server], first_events):
            async with forwarding(
                url, transport, client, [echo_server], second_events, wait_ready=False
            ):
                await wait_for(
                    lambda: any(isinstance(e, DialFailed) for e in second_events), timeout=10
                )
    (failed, *_) = [e for e in second_events if isinstance(e, DialFailed)]
    assert "busy" in failed.reason
    assert failed.retry_in > 0
    assert sum(isinstance(e, SessionUp) for e in server_events) == 1


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 64 and hard <= 64:
        pytest.skip("the hard limit is already the soft one here")
    code = (
        "import resource; from flyway_core.rlimits import raise_open_files;"
        "print(raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])"
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, timeout=30
    )
    now, limit = map(int, out.stdout.split())
    assert now == limit == hard


async def test_out_of_descriptors_streams_are_refused_and_the_front_door_still_answers(
    echo_server: Address,
) -> None:
    """A server whose process may open 400 files: streams beyond its budget are BUSY."""
    limit = 400
    budget = limit - min(HEADROOM, limit // 4)  # what rlimits.stream_budget() allows
    streams = budget + 80
    port = free_port()

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(  # noqa: ASYNC220 (a server process for the whole test)
        [*FLYWAY, f"127.0.0.1:{port}", "-p", "pw", "-q"],
        preexec_fn=cap,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.to_thread(wait_port, port)
        connection = ClientConnection(derive_master_key("pw"), now=time.time())
        carrier = await flyway_websocket.WebSocketTransport().dial(
            ServerURL("http", "127.0.0.1", port), connection.hello(), Settings()
        )
        try:
            ids = [connection.open_stream(echo_server) for _ in range(streams)]
            await carrier.send(connection.data_to_send())
            outcome: dict[int, str] = {}
            async with asyncio.timeout(20):
                while len(outcome) < streams:
                    for event in connection.receive_data(await carrier.receive(), time.time()):
                        kind = type(event).__name__
                        stream_id = getattr(event, "stream_id", None)
                        if kind == "StreamAccepted":
                            outcome[stream_id] = "accepted"
                        elif kind == "StreamReset":
                            outcome[stream_id] = ResetReason(event.reason).name  # type: ignore[attr-defined]
            async with aiohttp.ClientSession() as http, asyncio.timeout(5):
                async with http.get(f"http://127.0.0.1:{port}/") as answer:
                    assert answer.status == 404  # the front door still answers
        finally:
            await carrier.close()
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    accepted = [i for i in ids if outcome.get(i) == "accepted"]
    busy = [i for i in ids if outcome.get(i) == "BUSY"]
    assert len(accepted) + len(busy) == streams
    assert 0 < len(accepted) <= budget
    assert busy, "every stream was taken: the budget did not hold"
