"""The reorder buffers count what they hold: 400 far-ahead SENDs of 1 MiB from a valid client
(before: 397 MiB held by the server) cost the server at most its cap, and a hostile server's
far-ahead downlink envelopes cost a client no more than its own."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from flyway_http_post.client import EARLY_HELD, HttpPostCarrier
from flyway_http_post.envelope import EnvelopeKeys, Kind, Request, Status, new_session_id
from flyway_http_post.limits import Limits
from flyway_http_post.server import UP_HELD_LIMIT
from flyway_procs import flyway

from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import free_port, wait_port

PASSWORD = "reorder"
PIECE = (1 << 20) - 2048  # a SEND's payload: the body stays within the default 1 MiB
SLACK = 40 << 20  # interpreter, aiohttp and buffers that do not grow with what is sent


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_far_ahead_sends_hold_at_most_the_cap_in_the_server() -> None:
    port = free_port()
    keys = EnvelopeKeys(derive_master_key(PASSWORD))
    session = new_session_id()
    url = f"http://127.0.0.1:{port}/"
    with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q"]) as server:
        await asyncio.to_thread(wait_port, port)
        async with aiohttp.ClientSession() as http:

            async def post(request: Request, payload: bytes = b"") -> Status:
                body = keys.seal_request(request, payload)
                async with asyncio.timeout(10), http.post(url, data=body) as response:
                    assert response.status == 200
                    ((answer, _),) = keys.reader(request.number).feed(await response.read())
                    return answer.status

            hello = ClientConnection(derive_master_key(PASSWORD), now=time.time()).hello()
            assert await post(Request(Kind.OPEN, session), hello) is Status.OK
            before = peak = _rss(server.pid)
            payload = os.urandom(PIECE)
            statuses = []
            for i in range(400):  # offset 0 never comes: every piece is early
                # overlapping, 37 KiB apart within 14 MiB: each new one adds 37 KiB at most
                offset = 1 + ((37 << 10) * i) % (14 << 20)
                request = Request(Kind.SEND, session, up_offset=offset, number=i + 1)
                statuses.append(await post(request, payload))
                if i % 20 == 0:
                    peak = max(peak, _rss(server.pid))
            peak = max(peak, _rss(server.pid))
    growth = peak - before
    retried = statuses.count(Status.RETRY)
    print(f"server RSS growth after 400 far-ahead SENDs: {growth >> 20} MiB; {retried} RETRY")
    assert Status.RETRY in statuses  # past the cap the server says "send it again later"
    assert statuses[0] is Status.OK
    assert growth < UP_HELD_LIMIT + SLACK, f"server RSS grew by {growth >> 20} MiB"


async def test_far_ahead_downlink_envelopes_hold_at_most_the_cap_in_the_client() -> None:
    keys = EnvelopeKeys(b"k" * 32)
    carrier = HttpPostCarrier(None, keys, Limits(), new_session_id(), "hostile")  # type: ignore[arg-type]
    piece = b"d" * (1 << 20)
    for i in range(400):
        carrier._deliver(1 + (64 << 10) * i, piece)  # overlapping, never the gap at 0
    assert carrier._down.held <= EARLY_HELD
    assert carrier._down.held < (64 << 10) * 400 + len(piece)  # overlaps are held once
    assert carrier._inbox.empty()
