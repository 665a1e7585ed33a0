"""A client that half-closes after its request still gets the whole answer, then a FIN."""

from __future__ import annotations

import asyncio

import pytest

from flyway_core import Settings
from flyway_core.testing import serving

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("pipelined", [1, 3])
async def test_a_half_closed_request_gets_its_answer_and_a_close(pipelined: int) -> None:
    async with serving(Settings(password="pw"), []) as (_, address):
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(b"GET /missing HTTP/1.1\r\nHost: example.com\r\n\r\n" * pipelined)
        writer.write_eof()  # shutdown(SHUT_WR), as `nc -N` or a scripted probe does
        answer = await asyncio.wait_for(reader.read(), 5)  # b"" would be a close unanswered
        writer.close()
    assert answer.count(b"HTTP/1.1 404 Not Found\r\n") == pipelined
    assert answer.endswith(b"</html>\r\n")
