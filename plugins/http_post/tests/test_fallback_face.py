"""What the fallback sees: a body the HTTP POST handler declines reaches it whole, read or not;
and a body with a Content-Encoding is never tunnel traffic, not even a valid envelope."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from unittest import mock

import aiohttp
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request
from flyway_http_post.envelope import EnvelopeKeys, Kind, Request, new_session_id
from flyway_http_post.limits import Limits
from flyway_http_post.server import HttpPostServer

from flyway_core import Address
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import run_pair

KEYS = EnvelopeKeys(derive_master_key("pw"))


class EchoingFallback:
    """Says how many bytes of body it got and their hash: what a reverse proxy passes on."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        return web.Response(status=404, text=f"{len(body)} {digest}", headers={"Server": "nginx"})


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(10)) as response,
    ):
        return response.status, (await response.read()).decode("latin-1")


def _hello() -> bytes:
    return ClientConnection(derive_master_key("pw"), now=time.time()).hello()


async def test_every_declined_body_reaches_the_fallback_whole(echo_server: Address) -> None:
    async with run_pair([echo_server], transport="http") as pair:
        pair.server.fallback_handler = EchoingFallback()
        url = f"http://127.0.0.1:{pair.server.bound.port}/upload"
        replayed_open = KEYS.seal_request(Request(Kind.OPEN, new_session_id()), _hello())
        assert (await _post(url, replayed_open))[0] == 200  # the first time it opens a session
        bodies = {
            "random, envelope-sized (read, then declined)": os.urandom(600),
            "a replayed OPEN (read, then declined)": replayed_open,
            "another password's envelope (read, then declined)": EnvelopeKeys(
                derive_master_key("other")
            ).seal_request(Request(Kind.OPEN, new_session_id()), _hello()),
            "a form (too small to be ours: never read)": b"a=1&b=2",
            "larger than any envelope (never read)": os.urandom((1 << 20) + 8192),
        }
        for name, body in bodies.items():
            status, text = await _post(url, body)
            assert (status, text) == (404, f"{len(body)} {hashlib.sha256(body).hexdigest()}"), name


async def test_a_body_with_a_content_encoding_is_never_tunnel_traffic(echo_server: Address) -> None:
    """A valid OPEN, gzipped and labelled so: before, aiohttp inflated it and a session opened."""
    async with run_pair([echo_server], transport="http") as pair:
        url = f"http://127.0.0.1:{pair.server.bound.port}/"
        sessions = dict(pair.server.transports["http"].server.sessions)  # type: ignore[attr-defined]
        valid = KEYS.seal_request(Request(Kind.OPEN, new_session_id()), _hello())
        unclaimed = await _post(url, os.urandom(len(valid)))
        for encoding, body in (("gzip", gzip.compress(valid)), ("identity", valid)):
            assert await _post(url, body, {"Content-Encoding": encoding}) == unclaimed, encoding
        assert pair.server.transports["http"].server.sessions == sessions  # type: ignore[attr-defined]
        assert unclaimed[0] == 404


class _Door:
    """Just enough of a front door for the handler: a fallback that counts its calls."""

    def __init__(self) -> None:
        self.fallbacks = 0

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        self.fallbacks += 1
        return web.Response(status=404, text="fallback")


def _mocked(body: bytes, headers: dict[str, str] | None = None) -> tuple[web.Request, StreamReader]:
    stream = StreamReader(
        mock.Mock(_reading_paused=False), 1 << 16, loop=asyncio.get_running_loop()
    )
    stream.feed_data(body)
    stream.feed_eof()
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    return make_mocked_request("POST", "/", headers=headers, payload=stream), stream


async def test_the_handler_never_passes_on_a_request_whose_body_it_read() -> None:
    """Declined from the head: None, the body untouched. Declined after reading it: the
    handler answers with the door's fallback itself (before, it returned None after reading)."""
    door = _Door()
    server = HttpPostServer(door, KEYS, Limits())  # type: ignore[arg-type]
    unread = {
        "a form": (b"a=1&b=2", {}),
        "too large": (os.urandom((1 << 20) + 8192), {}),
        "gzipped": (gzip.compress(os.urandom(600)), {"Content-Encoding": "gzip"}),
    }
    for name, (body, headers) in unread.items():
        request, stream = _mocked(body, headers)
        assert await server.handle(request) is None, name
        assert not stream.at_eof(), f"{name}: the body was read"
    for body in (
        os.urandom(600),
        EnvelopeKeys(b"x" * 32).seal_request(Request(Kind.POLL, bytes(16))),
    ):
        request, stream = _mocked(body)
        answer = await server.handle(request)
        assert answer is not None and answer.status == 404
        assert await request.read() == body  # and the fallback could read it again
    assert door.fallbacks == 2
