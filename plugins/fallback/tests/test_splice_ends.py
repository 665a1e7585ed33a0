"""A splice whose two connections end with FINs both ways closes both and says it ended."""

from __future__ import annotations

import asyncio

import pytest
from flyway_fallback.splice import Splice

pytestmark = pytest.mark.asyncio


async def _site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers what it got once the client half-closed, then half-closes itself."""
    data = await reader.read()
    writer.write(b"got " + data)
    writer.write_eof()
    await writer.drain()
    await reader.read()  # waits for the close


@pytest.mark.parametrize("client_first", [True, False], ids=["client-eof-first", "site-eof-first"])
async def test_fins_both_ways_close_both_connections(client_first: bool) -> None:
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    splice = Splice(lambda: ended.set_result(None))
    site = await asyncio.start_server(_site, "127.0.0.1", 0)
    door = await loop.create_server(lambda: splice.client, "127.0.0.1", 0)
    async with site, door:
        reader, writer = await asyncio.open_connection(*door.sockets[0].getsockname()[:2])
        await loop.create_connection(lambda: splice.upstream, *site.sockets[0].getsockname()[:2])
        writer.write(b"a request")
        if client_first:
            writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 5) if client_first else b""
        if not client_first:
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 5)
        assert answer == b"got a request"
        await asyncio.wait_for(ended, 5)  # both connections closed: nothing left open
        assert splice.client.gone and splice.upstream.gone
        writer.close()
