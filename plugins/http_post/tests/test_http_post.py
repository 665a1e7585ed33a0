"""flyway-http-post against a real server on 127.0.0.1: quiet when idle, honest to probes,
bounded buffers, and a clean restart story."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest
from flyway_http_post import HttpPostTransport
from flyway_http_post.envelope import EnvelopeKeys, Kind, Request
from flyway_http_post.server import HttpSession

from flyway_core import Address, Settings
from flyway_core.events import DialFailed, SessionDown, SessionUp
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import hashed_exchange, run_pair, wait_for

POLL = 1.0  # a short long-poll timeout, so the tests see several polls


def _settings(**options: object) -> Settings:
    return Settings(password="pw", options={"http_poll_timeout": POLL, **options})


def _http(pair: object) -> HttpPostTransport:
    transport = pair.server.transports["http"]  # type: ignore[attr-defined]
    assert isinstance(transport, HttpPostTransport)
    return transport


async def test_an_idle_tunnel_sends_one_request_per_poll_timeout(echo_server: Address) -> None:
    async with run_pair([echo_server], transport="http", server_settings=_settings()) as pair:
        await asyncio.sleep(3.0)  # the open, the probe and the burst after the Welcome are over
        server = _http(pair).server
        assert server is not None
        before = server.requests
        await asyncio.sleep(5 * POLL + 0.1)
        idle = server.requests - before
        assert 4 <= idle <= 6, f"{idle} requests in {5 * POLL}s of idling"
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed  # and the quiet tunnel still works at once


async def _fetch(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as response:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
        return response.status, headers, await response.read()


async def test_a_post_that_fails_authentication_gets_exactly_the_fallback(
    echo_server: Address,
) -> None:
    async with run_pair([echo_server], transport="http") as pair:
        url = f"http://127.0.0.1:{pair.server.bound.port}/upload"  # type: ignore[union-attr]
        wrong_key = EnvelopeKeys(derive_master_key("not the password"))
        forged = wrong_key.seal_request(Request(Kind.OPEN, os.urandom(16)), b"hello" * 20)
        unclaimed = await _fetch(url, os.urandom(len(forged)))
        probe = await _fetch(url, forged)
        assert unclaimed == probe
        assert probe[0] == 404


async def test_the_server_holds_at_most_a_window_for_a_client_that_does_not_collect() -> None:
    window = 256 << 10
    produced = 0

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal produced
        block = os.urandom(1 << 16)
        try:
            while True:
                writer.write(block)
                await writer.drain()
                produced += len(block)
        except (ConnectionError, OSError):
            pass

    source = await asyncio.start_server(firehose, "127.0.0.1", 0)
    address = Address("127.0.0.1", source.sockets[0].getsockname()[1])
    settings = Settings(password="pw", window=window)
    async with source, run_pair([address], transport="http", server_settings=settings) as pair:
        local = pair.local(address)
        _, writer = await asyncio.open_connection(local.host, local.port)  # never reads
        await asyncio.sleep(2.0)
        stalled_at = produced
        await asyncio.sleep(0.5)
        assert produced == stalled_at, "the server kept reading the target"
        server = _http(pair).server
        assert server is not None
        (session,) = server.sessions.values()
        assert isinstance(session, HttpSession)
        assert session.unacknowledged <= window + 4096  # frames add a little overhead
        writer.close()


async def test_a_restarted_server_ends_the_session_and_a_new_one_starts(
    echo_server: Address, unused_tcp_port: int
) -> None:
    async with run_pair([echo_server], transport="http", server_settings=_settings()) as pair:
        first = pair.tunnel.session
        assert first is not None
        await asyncio.wait_for(first.started.wait(), 5)
        server = _http(pair).server
        assert server is not None
        for session in list(server.sessions.values()):  # what a restart forgets
            server.sessions.pop(session.id)
        await wait_for(lambda: pair.tunnel.session not in (None, first), timeout=10)
        print(pair.client_events)
        (down,) = [e for e in pair.client_events if isinstance(e, SessionDown)]
        assert "the server ended the session" in (down.error or "")
        assert sum(isinstance(e, SessionUp) for e in pair.client_events) == 2
        assert not any(isinstance(e, DialFailed) for e in pair.client_events)
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed


@pytest.mark.parametrize("max_body", [4096, 65536])
async def test_small_body_caps_still_carry_everything(echo_server: Address, max_body: int) -> None:
    settings = _settings(http_max_body=max_body)
    async with run_pair([echo_server], transport="http", server_settings=settings) as pair:
        async with asyncio.timeout(30):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 2 << 20)
        assert sent == echoed


async def test_a_replayed_open_request_gets_the_fallback(echo_server: Address) -> None:
    async with run_pair([echo_server], transport="http") as pair:
        url = f"http://127.0.0.1:{pair.server.bound.port}/"  # type: ignore[union-attr]
        keys = EnvelopeKeys(derive_master_key("pw"))
        hello = ClientConnection(derive_master_key("pw"), now=time.time()).hello()
        captured = keys.seal_request(Request(Kind.OPEN, os.urandom(16)), hello)
        first = await _fetch(url, captured)
        replayed = await _fetch(url, captured)
        unclaimed = await _fetch(url, os.urandom(len(captured)))
        assert first[0] == 200
        assert replayed == unclaimed
        # and the same hello under a new session id: the server's replay cache refuses it
        again = keys.seal_request(Request(Kind.OPEN, os.urandom(16)), hello)
        assert await _fetch(url, again) == unclaimed
