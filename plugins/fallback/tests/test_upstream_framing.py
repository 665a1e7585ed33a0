"""``-P http://`` frames what it sends the site from what it parsed, never from headers
a client (or the site) can name away.

A request whose ``Connection`` names ``Content-Length`` must still reach the site with
its length: otherwise a body that arrives after the head goes up unframed, the site
reads it as the next request on that pooled connection, and a smuggled unfinished
head takes the next visitor's request as its tail (that visitor gets the attacker's
page). The site here is a real aiohttp server that answers every request with the
path it asked for, on connections it keeps alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from fallback_site import door

from flyway_core.testing.probes import Probe, answer
from flyway_core.testing.sites import web_site


@contextlib.asynccontextmanager
async def path_site() -> AsyncIterator[tuple[int, list[str]]]:
    """A site answering each request with its path and the Host it was sent (``/big``: 8 MiB)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.path)
        if request.path == "/big":  # longer than the socket buffers: it ends after the upload
            return web.Response(body=b"b" * (8 << 20))
        return web.Response(text=f"{request.path} for {request.host}", headers={"X-Pad": "y" * 16})

    app = web.Application(handler_args={"max_field_size": 1 << 16})
    app.router.add_route("*", "/{tail:.*}", handle)
    async with web_site(app) as port:
        yield port, seen


async def test_connection_naming_content_length_smuggles_nothing_into_the_next_answer() -> None:
    async with path_site() as (site, seen):
        async with door(f"http://127.0.0.1:{site}", reverse_proxy_connections=1) as (_, bound):
            smuggled = b"GET /smuggled HTTP/1.1\r\nX-Ignore: "  # a head left unfinished
            for method in (b"GET", b"POST"):
                reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
                writer.write(
                    method + b" /big HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(smuggled)
                )
                await writer.drain()
                await asyncio.sleep(0.2)  # the body comes after the head: it is streamed
                writer.write(smuggled)
                await writer.drain()
                await asyncio.sleep(0.2)  # the upload ends while the answer is still going out
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 8388608" in head
                assert await reader.readexactly(8 << 20) == b"b" * (8 << 20)
                writer.close()
                victim = await answer(
                    bound.port,
                    Probe(
                        "victim", b"GET /victim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    ),
                )
                assert victim.responses[0].body == b"/victim for x", victim.raw
            assert "/smuggled" not in seen and seen.count("/victim") == 2


async def test_connection_naming_host_keeps_the_clients_host() -> None:
    async with path_site() as (site, _), door(f"http://127.0.0.1:{site}") as (_, bound):
        probe = Probe("host", b"GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: Host\r\n\r\n")
        got = await answer(bound.port, probe)
        assert got.responses[0].body == b"/h for example.test"


async def test_the_sites_connection_naming_its_framing_keeps_the_framing() -> None:
    """A site whose ``Connection`` names ``Transfer-Encoding``: its chunked answer still
    says so to the client, and a pipelined second answer stays a second answer."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                if head.startswith(b"GET /one "):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Transfer-Encoding\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with door(f"http://127.0.0.1:{port}") as (_, bound):
            probe = Probe(
                "framing",
                b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            got = await answer(bound.port, probe)
            assert [r.body for r in got.responses] == [b"one", b"two"], got.raw
            first_head = got.raw.split(b"\r\n\r\n", 1)[0].lower()
            assert b"transfer-encoding: chunked" in first_head
    finally:
        server.close()
        await server.wait_closed()
