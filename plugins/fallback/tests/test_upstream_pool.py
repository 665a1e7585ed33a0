"""``-P http://``'s own connections to the site: kept, reused, limited, and let go.

The site is a real asyncio server on 127.0.0.1 that answers from a script (its
canned answers, byte for byte) and counts the connections it was given, so each
test can say how many connections its requests took.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from fallback_site import door
from flyway_fallback.reverse_proxy.upstream import UpstreamPool

from flyway_core.testing.probes import Probe, answer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the site writes for one request: ``data`` after ``delay`` s, then maybe closes.

    With ``dribble``, the last ``dribble`` bytes go one at a time, 0.15 s apart.
    """

    data: bytes | None  # None: close without answering
    close: bool = False
    delay: float = 0.0
    dribble: int = 0


@dataclass
class Site:
    """A scripted site: ``script(head, connection, nth)`` decides each reply."""

    script: Callable[[bytes, int, int], Reply]
    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, nth = self.connections, 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")  # the tests send no bodies
                except asyncio.IncompleteReadError:
                    return
                self.heads.append(head)
                nth += 1
                reply = self.script(head, connection, nth)
                await asyncio.sleep(reply.delay)
                if reply.data is None:
                    return
                cut = len(reply.data) - reply.dribble
                writer.write(reply.data[:cut])
                for i in range(cut, len(reply.data)):
                    await asyncio.sleep(0.15)
                    writer.write(reply.data[i : i + 1])
                await writer.drain()
                if reply.close:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(script: Callable[[bytes, int, int], Reply]) -> AsyncIterator[Site]:
    site = Site(script)
    server = await asyncio.start_server(site.serve, "127.0.0.1", 0)
    site.port = server.sockets[0].getsockname()[1]
    try:
        yield site
    finally:
        server.close()
        await server.wait_closed()


def _get(*paths: str, method: str = "GET") -> Probe:
    heads = "".join(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n" for path in paths)
    return Probe("gets", heads.encode())


def _path(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


async def test_requests_one_after_another_share_one_upstream_connection() -> None:
    async with scripted(lambda head, c, n: Reply(OK)) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            got = await answer(bound.port, _get(*(f"/{i}" for i in range(10))))
            again = await answer(bound.port, _get("/other-client"))
    assert [r.status for r in got.responses] == [200] * 10
    assert [r.status for r in again.responses] == [200]
    assert site.connections == 1


ANSWERS = {
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # to a HEAD: no body follows
    b"/204": b"HTTP/1.1 204 No Content\r\n\r\n",
    b"/304": b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"/early": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK,
}


async def test_answers_without_a_body_chunked_or_after_1xx_keep_the_connection() -> None:
    async with scripted(lambda head, c, n: Reply(ANSWERS[_path(head)])) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            head = await answer(bound.port, _get("/head", method="HEAD"))
            got = await answer(bound.port, _get("/204", "/304", "/chunked", "/early"))
    assert [r.status for r in head.responses] == [200]
    assert head.responses[0].header("Content-Length") == "5" and head.raw.endswith(b"\r\n\r\n")
    statuses = re.findall(rb"^HTTP/1.1 (\d+)", got.raw, re.MULTILINE)
    assert statuses == [b"204", b"304", b"200", b"200"]  # no 103: skipped
    assert got.raw.endswith(b"\r\n\r\n5\r\nabcde\r\n0\r\n\r\n" + OK)
    assert site.connections == 1


CLOSING = {
    b"/until-close": Reply(b"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection", close=True),
    b"/says-close": Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
    b"/http10": Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    b"/after": Reply(OK),
}


@pytest.mark.parametrize("path", [b"/until-close", b"/says-close", b"/http10"])
async def test_an_answer_that_ends_the_connection_is_not_reused(path: bytes) -> None:
    async with scripted(lambda head, c, n: CLOSING[_path(head)]) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            first = await answer(bound.port, _get(path.decode()))
            after = await answer(bound.port, _get("/after"))
    assert [r.status for r in first.responses] == [200]
    body = b"the body ends with the connection" if path == b"/until-close" else b"ok"
    assert first.responses[0].body == body
    assert [r.status for r in after.responses] == [200]
    assert site.connections == 2


def _drops_the_second(head: bytes, connection: int, nth: int) -> Reply:
    """Each connection answers one request, then closes on the next unanswered."""
    return Reply(OK) if nth == 1 else Reply(None)


async def test_a_connection_the_site_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    async with scripted(_drops_the_second) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            got = await answer(bound.port, _get("/a", "/b"))
    assert [r.status for r in got.responses] == [200, 200]
    assert [_path(h) for h in site.heads] == [b"/a", b"/b", b"/b"]
    assert site.connections == 2


async def test_a_request_that_may_not_be_repeated_is_not_sent_twice() -> None:
    async with scripted(_drops_the_second) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            await answer(bound.port, _get("/a"))
            got = await answer(bound.port, _get("/b", method="POST"))
    assert [r.status for r in got.responses] == [502]
    assert [_path(h) for h in site.heads] == [b"/a", b"/b"]


async def test_a_site_that_closes_idle_connections_costs_no_request() -> None:
    async with scripted(lambda head, c, n: Reply(OK, close=True)) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            for _ in range(3):
                got = await answer(bound.port, _get("/"))
                assert [r.status for r in got.responses] == [200]
    assert len(site.heads) == 3 and site.connections == 3


MORE_THAN_ASKED = {  # each in one write: the extra bytes come in the read of the answer
    b"/head-with-body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"/304-with-body": b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 5\r\n\r\nhello',
    b"/past-its-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE",
    b"/after-100": b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"GARBAGE",
    b"/after": OK,
}


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/head-with-body", "HEAD", 200),
        ("/304-with-body", "GET", 304),
        ("/past-its-length", "GET", 200),
        ("/after-100", "GET", 200),
    ],
)
async def test_bytes_past_a_whole_answer_let_it_through_and_end_the_connection(
    path: str, method: str, status: int
) -> None:
    """As nginx: the answer goes on, the connection is not used again (it was a 502)."""
    async with scripted(lambda head, c, n: Reply(MORE_THAN_ASKED[_path(head)])) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            got = await answer(bound.port, _get(path, method=method))
            after = await answer(bound.port, _get("/after"))
    assert [r.status for r in got.responses] == [status], got.raw
    if status == 200 and method == "GET":
        assert got.responses[0].body == b"ok"
    else:
        assert got.raw.endswith(b"\r\n\r\n") and b"hello" not in got.raw
    assert not got.closed
    assert [r.status for r in after.responses] == [200]
    assert site.connections == 2


async def test_a_101_nobody_asked_for_gets_nginxs_502() -> None:
    switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nx"
    async with scripted(lambda head, c, n: Reply(switched)) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            got = await answer(bound.port, _get("/"))
    assert [r.status for r in got.responses] == [502], got.raw
    assert b"<title>502 Bad Gateway</title>" in got.responses[0].body


SLOW = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"


async def test_a_site_that_answers_no_http_gets_nginxs_502_and_is_dropped() -> None:
    def script(head: bytes, connection: int, nth: int) -> Reply:
        return Reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n" if _path(head) == b"/ssh" else OK)

    async with scripted(script) as site:
        async with door(f"http://127.0.0.1:{site.port}") as (_, bound):
            got = await answer(bound.port, _get("/ssh", "/after"))
    assert [r.status for r in got.responses] == [502, 200]
    assert b"<title>502 Bad Gateway</title>" in got.responses[0].body
    assert site.connections == 2


def _slow_first(head: bytes, connection: int, nth: int) -> Reply:
    """``/slow`` comes a byte at a time, never ``timeout`` apart, for 1.5 s."""
    return Reply(SLOW, dribble=10) if _path(head) == b"/slow" else Reply(OK)


async def test_a_request_that_waits_longer_than_the_timeout_for_a_connection_gets_504() -> None:
    async with scripted(_slow_first) as site:
        spec = f"http://127.0.0.1:{site.port}"
        async with door(spec, reverse_proxy_connections=1, reverse_proxy_timeout=0.5) as (_, bound):
            slow = asyncio.create_task(answer(bound.port, _get("/slow"), limit=5))
            await asyncio.sleep(0.1)
            waited = await answer(bound.port, _get("/x"), quiet=1.0, limit=3)
            served = await slow
            after = await answer(bound.port, _get("/y"))
    assert [r.status for r in waited.responses] == [504]
    assert 0.4 < waited.elapsed < 1.2
    assert [r.status for r in served.responses] == [200]
    assert served.responses[0].body == b"0123456789"
    assert [r.status for r in after.responses] == [200]
    assert site.connections == 1


async def test_a_site_that_stalls_mid_answer_has_the_client_closed_after_the_timeout() -> None:
    stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes!"  # 90 never come
    async with scripted(lambda head, c, n: Reply(stalled)) as site:
        async with door(f"http://127.0.0.1:{site.port}", reverse_proxy_timeout=0.5) as (_, bound):
            got = await answer(bound.port, _get("/"), quiet=3.0, limit=5)
    assert got.closed
    assert got.raw.endswith(b"ten bytes!")
    assert 0.4 < got.elapsed < 1.5


async def test_the_pool_opens_at_most_its_size_and_hands_back_what_was_released() -> None:
    async with scripted(lambda head, c, n: Reply(OK)) as site:
        pool = UpstreamPool("127.0.0.1", site.port, ssl=None, size=2, timeout=0.3)
        try:
            first, second = await pool.acquire(), await pool.acquire()
            with pytest.raises(TimeoutError):
                await pool.acquire()
            assert pool.open == 2
            pool.release(first, reuse=True)
            assert await pool.acquire() is first
            pool.release(second, reuse=False)
            third = await pool.acquire()
            assert third is not first and third is not second
        finally:
            await pool.close()
        assert pool.open == 0
        await asyncio.sleep(0.05)
    assert site.connections == 3
