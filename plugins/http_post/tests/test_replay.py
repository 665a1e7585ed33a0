"""Every envelope is fresh: a recording relay between client and server captures the
session's requests during a live transfer, and each kind replayed from outside (OPEN,
SEND, POLL, streamed POLL, CLOSE, PING) gets exactly what an unclaimed request gets,
while the transfer stays whole and on time. And a downlink answer lost on the way
(the relay swallows it) is recovered within seconds, not after the poll times out."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import aiohttp
from flyway_http_post import HttpPostTransport
from flyway_http_post.client import HttpPostCarrier
from flyway_http_post.envelope import EnvelopeKeys, Kind, Request, RequestFlags

from flyway_core import Address, ServerURL, Settings
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import hashed_exchange, run_pair, wait_for

if TYPE_CHECKING:
    from intermediaries import RecordedRequest, RecordingRelay

pytest_plugins = ["intermediaries"]

KEYS = EnvelopeKeys(derive_master_key("pw"))
Answer = tuple[int, dict[str, str], bytes]


async def _post(url: str, body: bytes) -> Answer:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url, data=body, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
        return response.status, headers, await response.read()


def _kind(recorded: RecordedRequest) -> str:
    opened = KEYS.open_request_whole(recorded.body)
    assert opened is not None, "the relay recorded something that is not the client's"
    request = opened.request
    if request.kind is Kind.POLL and RequestFlags.STREAM in request.flags:
        return "streamed POLL"
    if request.kind is Kind.SEND and not opened.payload:
        return "empty SEND"
    return request.kind.name


def _session(recorded: RecordedRequest) -> bytes:
    opened = KEYS.open_request_whole(recorded.body)
    assert opened is not None
    return opened.request.session


def _last(records: list[RecordedRequest], kind: str) -> RecordedRequest:
    found = [r for r in records if _kind(r) == kind]
    assert found, f"no {kind} recorded"
    return found[-1]


def _hello() -> bytes:
    return ClientConnection(derive_master_key("pw"), now=time.time()).hello()


async def test_each_kind_of_request_replayed_during_a_transfer_gets_the_fallback(
    echo_server: Address, recording_relay: RecordingRelay
) -> None:
    async with run_pair([echo_server], transport="http", front=recording_relay.start) as pair:
        server_url = f"http://127.0.0.1:{pair.server.bound.port}"
        carrier = pair.tunnel.session._carrier  # type: ignore[union-attr]
        assert isinstance(carrier, HttpPostCarrier)
        await wait_for(lambda: carrier.streaming, timeout=10)  # streamed POLLs from now on

        # A session that comes and goes first leaves a CLOSE, and requests of an ended
        # session; then a PING like the doctor's (or the client's session check).
        other = await HttpPostTransport().dial(
            ServerURL.parse(recording_relay.url, default_port=80), _hello(), Settings(password="pw")
        )
        await wait_for(
            lambda: any(
                _kind(r) == "POLL" and _session(r) == other._id for r in recording_relay.recorded
            )
        )
        await other.close()
        ended = [r for r in recording_relay.recorded if _session(r) == other._id]
        ping = Request(Kind.PING, os.urandom(16), time_ms=round(time.time() * 1000))
        assert (await _post(recording_relay.url, KEYS.seal_request(ping, b"p" * 100)))[0] == 200

        started = time.monotonic()
        transfer = asyncio.create_task(hashed_exchange(pair.local(echo_server), 32 << 20))
        kinds = ("OPEN", "SEND", "empty SEND", "POLL", "streamed POLL")
        live = [r for r in recording_relay.recorded if _session(r) == carrier._id]

        def seen() -> bool:
            live[:] = [r for r in recording_relay.recorded if _session(r) == carrier._id]
            return {_kind(r) for r in live} >= set(kinds)

        await wait_for(seen, timeout=20)
        assert not transfer.done()
        captured = {kind: _last(live, kind) for kind in kinds}
        captured["PING"] = _last(recording_relay.recorded, "PING")
        captured["CLOSE"] = _last(ended, "CLOSE")
        captured["POLL of an ended session"] = _last(ended, "POLL")

        async def replay(recorded: RecordedRequest) -> tuple[Answer, Answer, Answer]:
            url = server_url + recorded.path
            unclaimed = await _post(url, os.urandom(len(recorded.body)))
            return unclaimed, await _post(url, recorded.body), await _post(url, recorded.body)

        answers = await asyncio.gather(*(replay(r) for r in captured.values()))
        assert not transfer.done(), "the replays were to land during the transfer"
        for kind, (unclaimed, replayed, again) in zip(captured, answers, strict=True):
            assert replayed == again == unclaimed, kind
            assert unclaimed[0] == 404

        async with asyncio.timeout(60):
            sent, echoed, *_ = await transfer
        assert sent == echoed
        took = time.monotonic() - started
        print(f"32 MiB each way with {2 * len(captured)} replays meanwhile: {took:.1f} s")
        assert took < 30


async def test_a_lost_streamed_answer_is_sent_again_within_seconds(
    echo_server: Address, recording_relay: RecordingRelay
) -> None:
    """The relay reads one streamed answer from the server to its end and never passes it
    on: the server believes those bytes delivered. The client sees the gap persist (the
    server says it holds more than came) and asks for a rewind, well before the lost
    poll would time out (45 s)."""
    async with run_pair([echo_server], transport="http", front=recording_relay.start) as pair:
        carrier = pair.tunnel.session._carrier  # type: ignore[union-attr]
        assert isinstance(carrier, HttpPostCarrier)
        await wait_for(lambda: carrier.streaming, timeout=10)
        recording_relay.swallow = lambda r: _kind(r) == "streamed POLL"
        started = time.monotonic()
        async with asyncio.timeout(20):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 4 << 20)
        assert sent == echoed
        assert recording_relay.swallowed == 1
        print(f"4 MiB each way, one streamed answer lost: {time.monotonic() - started:.1f} s")
