"""``-P http://``: a reverse proxy people would run in front of their site.

An aiohttp upstream in this process shows what arrives (head and a hash of the
body); nginx (stock config, in front of a dead or a mute origin) is the reference
for the 502 and 504 pages; curl sends ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from fallback_compare import comparable, same_answers
from fallback_site import door
from flyway_fallback import reverse_proxy
from intermediaries.proxies import run_nginx

from flyway_core import ConfigError, Settings
from flyway_core.testing import free_port
from flyway_core.testing.certs import self_signed
from flyway_core.testing.probes import Answer, Probe, answer
from flyway_core.testing.sites import web_site
from flyway_core.tls import server_ssl


@dataclass
class Upstream:
    """What the upstream saw: each request's head and body hash, and its connections."""

    port: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)


UPSTREAM = web.AppKey("upstream", Upstream)


async def _echo(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    digest, size = hashlib.sha256(), 0
    async for piece in request.content.iter_any():
        digest.update(piece)
        size += len(piece)
    assert request.transport is not None
    upstream.connections.add(id(request.transport))
    upstream.seen.append(
        {
            "method": request.method,
            "target": request.raw_path,
            "headers": [(k.decode(), v.decode()) for k, v in request.raw_headers],
            "sha": digest.hexdigest(),
            "size": size,
        }
    )
    return web.Response(text="seen", headers={"X-Upstream": "yes", "Connection": "keep-alive"})


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(3):
        await response.write(b"piece\n")
        await asyncio.sleep(0.3)
    await response.write_eof()
    return response


async def _ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str("echo: " + message.data)
    return ws


async def _cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000000"})
    await response.prepare(request)
    await response.write(b"x" * 1000)
    assert request.transport is not None
    request.transport.abort()
    return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    app = web.Application(client_max_size=64 << 20)
    app[UPSTREAM] = state
    app.router.add_route("*", "/stream", _stream)
    app.router.add_route("GET", "/ws", _ws)
    app.router.add_route("GET", "/cut", _cut)
    app.router.add_route("*", "/{tail:.*}", _echo)
    async with web_site(app) as state.port:
        yield state


async def test_heads_arrive_with_forwarding_headers_and_without_hop_by_hop(
    upstream: Upstream,
) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}/pre") as (_, bound):
        raw = (
            "GET /a%2Fb/../c?q=1 HTTP/1.1\r\nHost: site.example\r\nX-Keep: Yes\r\n"
            "Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
            "X-Forwarded-For: 10.0.0.9\r\n\r\n"
        )
        got = await answer(bound.port, Probe("head", raw.encode()))
    assert got.responses[0].status == 200
    (seen,) = upstream.seen
    assert seen["target"] == "/pre/a%2Fb/../c?q=1"  # nothing re-encoded or normalised
    headers = dict(seen["headers"])  # type: ignore[arg-type]
    assert headers["Host"] == "site.example"
    assert headers["X-Keep"] == "Yes"
    assert headers["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == "site.example"
    for gone in ("X-Drop", "Keep-Alive", "TE", "User-Agent", "Accept-Encoding", "Accept"):
        assert gone not in headers
    # the answer: the upstream's own headers, in its order (aiohttp names itself as Server)
    names = [name for name, _ in got.responses[0].headers]
    assert "X-Upstream" in names and dict(got.responses[0].headers)["Server"].startswith("Python")


async def test_the_upstreams_host_when_asked(upstream: Upstream) -> None:
    spec = f"http://127.0.0.1:{upstream.port}"
    async with door(spec, reverse_proxy_host="upstream") as (_, bound):
        await answer(bound.port, Probe("h", b"GET / HTTP/1.1\r\nHost: site.example\r\n\r\n"))
    headers = dict(upstream.seen[0]["headers"])  # type: ignore[arg-type]
    assert headers["Host"] == f"127.0.0.1:{upstream.port}"
    assert headers["X-Forwarded-Host"] == "site.example"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_bodies_stream_up_intact(upstream: Upstream, chunked: bool) -> None:
    body = os.urandom(5 << 20)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        async with aiohttp.ClientSession() as http:
            data = pieces() if chunked else body
            async with http.post(f"http://127.0.0.1:{bound.port}/up", data=data) as response:
                assert response.status == 200
    (seen,) = upstream.seen
    assert seen["sha"] == hashlib.sha256(body).hexdigest()
    assert ("Transfer-Encoding", "chunked") in seen["headers"] if chunked else True  # type: ignore[operator]


async def test_a_body_a_tunnel_handler_read_reaches_the_site_whole(upstream: Upstream) -> None:
    """A POST that looks like an HTTP tunnel envelope is read by the transport, found not
    to be one, and must still reach the site whole (goflyway's -P lost it)."""
    body = os.urandom(5000)
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{bound.port}/", data=body) as response:
                assert response.status == 200
    assert upstream.seen[0]["sha"] == hashlib.sha256(body).hexdigest()


async def test_a_forged_websocket_key_gets_no_101_from_flyway(upstream: Upstream) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        raw = (
            "GET /page HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        got = await answer(bound.port, Probe("ws", raw.encode()))
    assert got.responses[0].status == 200  # the site's answer to its own page
    assert upstream.seen[0]["target"] == "/page"


async def test_responses_stream_down_as_the_site_writes(upstream: Upstream) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{bound.port}/stream") as response:
                loop = asyncio.get_running_loop()
                start = loop.time()
                first = await response.content.readline()
                assert first == b"piece\n" and loop.time() - start < 0.25
                assert await response.read() == b"piece\n" * 2


async def test_a_websocket_passes_through_to_the_site(upstream: Upstream) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{bound.port}/ws") as ws:
                for text in ("one", "two"):
                    await ws.send_str(text)
                    assert (await ws.receive(timeout=5)).data == f"echo: {text}"


async def test_upstream_connections_are_pooled(upstream: Upstream) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        async with aiohttp.ClientSession() as http:
            for _ in range(30):
                async with http.get(f"http://127.0.0.1:{bound.port}/x") as response:
                    await response.read()
            clients = [aiohttp.ClientSession() for _ in range(10)]
            try:
                await asyncio.gather(*(c.get(f"http://127.0.0.1:{bound.port}/y") for c in clients))
            finally:
                await asyncio.gather(*(c.close() for c in clients))
    assert len(upstream.seen) == 40
    assert len(upstream.connections) <= 11  # one kept alive for the 30, one per parallel one


async def test_at_most_the_connections_asked_for_reach_the_site(upstream: Upstream) -> None:
    spec = f"http://127.0.0.1:{upstream.port}"
    async with door(spec, reverse_proxy_connections=2) as (_, bound):
        clients = [aiohttp.ClientSession() for _ in range(8)]
        try:
            answers = await asyncio.gather(
                *(c.get(f"http://127.0.0.1:{bound.port}/z") for c in clients)
            )
            assert [a.status for a in answers] == [200] * 8
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    assert len(upstream.connections) <= 2


async def test_an_upstream_failing_mid_answer_closes_the_client(upstream: Upstream) -> None:
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        got = await answer(bound.port, Probe("cut", b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert got.closed and len(got.raw) < 1_000_000


async def test_expect_100_continue_from_curl_reaches_the_site(upstream: Upstream) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body = os.urandom(200_000)
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        process = await asyncio.create_subprocess_exec(
            curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
            "--data-binary", "@-", f"http://127.0.0.1:{bound.port}/upload",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(body), 10)
    assert out == b"200"
    assert upstream.seen[0]["sha"] == hashlib.sha256(body).hexdigest()


async def test_a_dead_site_gets_nginxs_502_and_a_mute_one_its_504() -> None:
    dead = free_port()
    mute = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    mute_port = mute.sockets[0].getsockname()[1]
    probe = Probe("get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for port, status in ((dead, 502), (mute_port, 504)):
            extra = "proxy_read_timeout 1s;"
            with run_nginx(port, template="nginx-stock.conf.in", location_extra=extra) as nginx:
                spec = f"http://127.0.0.1:{port}"
                async with door(spec, reverse_proxy_timeout=1.0) as (_, bound):
                    ours, theirs = await asyncio.gather(
                        answer(bound.port, probe, quiet=2.0), answer(nginx.port, probe, quiet=2.0)
                    )
            assert [r.status for r in ours.responses] == [status]
            assert comparable(ours, bound.port) == comparable(theirs, nginx.port)
            assert ours.ending == theirs.ending
    finally:
        mute.close()


def test_a_bad_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected http://HOST:PORT"):
        reverse_proxy.fallback_for("http://", Settings())
    with pytest.raises(ConfigError, match="query"):
        reverse_proxy.fallback_for("http://127.0.0.1:1/?a=b", Settings())
    assert reverse_proxy.fallback_for("/var/www", Settings()) is None
    assert reverse_proxy.fallback_for(None, Settings()) is None


async def test_an_expect_100_continue_behind_another_request_gets_its_100_and_answer(
    upstream: Upstream,
) -> None:
    """Behind another request on the connection (a review's deadlock: nobody sent the
    100, the client waiting for it never sent the body the site reads): the request
    is the connection's last parsed one, so it goes to the site whole, which sends
    its 100 itself."""
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    async with door(f"http://127.0.0.1:{upstream.port}") as (_, bound):
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
        try:
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + head)
            async with asyncio.timeout(3):
                got = b""
                while b"100 Continue" not in got:
                    got += await reader.read(1 << 16) or b"!"
                    assert not got.endswith(b"!"), got
                writer.write(b"hello")
                while got.count(b"seen") < 2:
                    got += await reader.read(1 << 16)
        finally:
            writer.close()
    assert got.index(b"HTTP/1.1 200") < got.index(b"HTTP/1.1 100 Continue")
    assert upstream.seen[1]["sha"] == hashlib.sha256(b"hello").hexdigest()


# --- what the site's answer loses on the way, and what the site learns -------------------

_HOP_BY_HOP_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: site\r\nContent-Length: 4\r\nConnection: X-Foo, keep-alive\r\n"
    b"X-Foo: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
    b"X-Kept: yes\r\n\r\nbody"
)
_TRAILER_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: site\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    b"4\r\nbody\r\n0\r\nX-Sum: 42\r\n\r\n"
)


async def _raw_site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A site that writes its answers byte for byte (aiohttp's server would frame them)."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            trailer = head.startswith(b"GET /trailer ")
            writer.write(_TRAILER_ANSWER if trailer else _HOP_BY_HOP_ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_hop_by_hop_headers_of_the_sites_answer_stay_behind() -> None:
    """``Connection`` and what it names, ``Keep-Alive``, ``Proxy-Connection``, an
    ``Upgrade`` without a 101, and trailers are the site's connection's, not the client's."""
    site = await asyncio.start_server(_raw_site, "127.0.0.1", 0)
    try:
        async with door(f"http://127.0.0.1:{site.sockets[0].getsockname()[1]}") as (_, bound):
            plain = await answer(bound.port, Probe("h", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            chunked = await answer(
                bound.port, Probe("t", b"GET /trailer HTTP/1.1\r\nHost: x\r\n\r\n")
            )
    finally:
        site.close()
    (response,) = plain.responses
    headers = dict(response.headers)
    assert response.status == 200 and response.body == b"body"
    assert headers["X-Kept"] == "yes" and headers["Server"] == "site"
    for gone in ("X-Foo", "Keep-Alive", "Proxy-Connection", "Upgrade"):
        assert gone not in headers, gone
    assert "x-foo" not in headers.get("Connection", "").lower()
    assert not plain.closed  # the client's connection is kept, whatever the site's said
    (response,) = chunked.responses
    assert response.body == b"body"
    assert b"X-Sum" not in chunked.raw


def _self_signed(folder: Path) -> ssl.SSLContext:
    cert, key = self_signed(folder, "flyway proxy test")
    options = {"cert": str(cert), "key": str(key)}
    context = server_ssl(Settings(options=options))
    assert context is not None
    return context


async def test_a_door_with_tls_tells_the_site_the_client_came_over_https(
    upstream: Upstream, tmp_path: Path
) -> None:
    spec = f"http://127.0.0.1:{upstream.port}"
    async with door(spec, ssl_context=_self_signed(tmp_path)) as (_, bound):
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{bound.port}/page"
            async with http.get(url, ssl=False, headers={"X-Forwarded-Proto": "http"}) as got:
                assert got.status == 200 and await got.text() == "seen"
    headers = dict(upstream.seen[0]["headers"])  # type: ignore[arg-type]
    assert headers["X-Forwarded-Proto"] == "https"  # the door's word, not the client's
    assert headers["X-Forwarded-Host"] == f"127.0.0.1:{bound.port}"


# --- what still tells -P http:// from the site alone (docs/fallback.md) -------------------

_SMALL_TXT = b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"

# probe: (what flyway in front of nginx gives, what nginx alone gives, why), each side as
# its statuses (interim 100s too) and how the connection ended; the rest of the list in
# docs/fallback.md is timing, load, timeouts and TLS, or invisible in a probe's answer
PROXY_DIFFERENCES = {
    Probe(
        "an absolute URI with a request pipelined behind it",
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n" + _SMALL_TXT,
    ): ("400 FIN", "200 200 held", "the door answers 400 itself; the site sees nothing"),
    Probe(
        "an upgrade other than WebSocket with a request pipelined behind it",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n" + _SMALL_TXT,
    ): ("200 held", "200 200 held", "aiohttp's parser took the pipelined bytes"),
    Probe(
        "an unparsable head over 40 KiB",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(42))
        + b"\r\n",
    ): ("400 FIN", "400 FIN", "the door's plain 400; nginx's page says Header Too Large"),
    Probe(
        "Expect: 100-continue on a chunked body",
        b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ): ("100 404 held", "404 held", "the door sends the 100 for a chunked body"),
    Probe(
        "Transfer-Encoding: gzip, chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
    ): ("405 held", "501 FIN", "the pooled client sends the site the de-chunked body"),
    Probe("HTTP/0.9", b"GET /\r\n"): (
        "held",
        "FIN",
        "aiohttp waits for the rest of a head; nginx sends the bare page",
    ),
    Probe(
        "a POST whose body comes short, over 89 bytes",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\nabc",
    ): ("held", "405 held", "the HTTP POST transport reads such a body whole to judge it"),
    Probe("a 412 from the site", b'GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-Match: "x"\r\n\r\n'): (
        "412 held",
        "412 FIN",
        "the site closes after its 412; the door keeps the client",
    ),
}


def _summary(got: Answer) -> str:
    """Its statuses, interim 100s too, and how the connection ended: ``"100 404 held"``."""
    interim = ["100"] * got.raw.count(b"HTTP/1.1 100 Continue\r\n")
    return " ".join(interim + [str(r.status) for r in got.responses] + [got.ending])


@pytest.mark.parametrize("probe", PROXY_DIFFERENCES, ids=lambda p: p.name)
async def test_a_known_difference_from_the_site_alone_is_still_just_that(
    probe: Probe, nginx_site: int
) -> None:
    ours_then, theirs_then, why = PROXY_DIFFERENCES[probe]
    async with door(f"http://127.0.0.1:{nginx_site}") as (_, bound):
        ours, theirs = await same_answers(probe, bound.port, nginx_site)
    seen = [
        (comparable(ours, bound.port), _summary(ours)),
        (comparable(theirs, nginx_site), _summary(theirs)),
    ]
    assert seen[0] != seen[1], f"{probe.name} no longer differs: take it off PROXY_DIFFERENCES"
    assert (seen[0][1], seen[1][1]) == (ours_then, theirs_then), why


async def test_a_malformed_request_after_a_good_one_gets_a_stock_nginxs_400(
    nginx_site: int,
) -> None:
    """In a later read, the first request's bytes are gone: the door answers with its
    own nginx 400 page, which is the site's only because the site is a stock nginx."""

    async def two_reads(port: int) -> Answer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_SMALL_TXT)
            async with asyncio.timeout(5):
                raw = await reader.readuntil(b"hello, world\n")
                writer.write(b"GET / HTTTP/1.1\r\nHost: x\r\n\r\n")
                raw += await reader.read()  # until the close
        finally:
            writer.close()
        return Answer.parse(raw, True)

    async with door(f"http://127.0.0.1:{nginx_site}") as (_, bound):
        ours, theirs = await asyncio.gather(two_reads(bound.port), two_reads(nginx_site))
    assert [r.status for r in ours.responses] == [200, 400]
    assert comparable(ours, bound.port) == comparable(theirs, nginx_site)
