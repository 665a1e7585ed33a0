"""The HTTP proxy on a -D port: CONNECT, absolute-form requests, hop-by-hop headers, failures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest
from flyway_socks5 import httpproxy

from flyway_core import Address
from flyway_core.testing import free_port

StartProxy = Callable[..., Any]  # the start_proxy fixture (conftest.py)


async def _exchange(proxy: Address, data: bytes) -> bytes:
    """Send raw bytes; return everything the proxy sent back before closing."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(data)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


class HttpClient:
    """One keep-alive connection to the proxy; h11 parses the answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, proxy: Address) -> HttpClient:
        return cls(*await asyncio.open_connection(proxy.host, proxy.port))

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None = None
    ) -> tuple[h11.Response, bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        if not any(name.lower() == "host" for name, _ in headers):
            headers = [("Host", url.split("/")[2]), *headers]
        self.writer.write(self.conn.send(h11.Request(method=method, target=url, headers=headers)))
        if body is not None:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        response, data = None, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, bytes(data)

    def close(self) -> None:
        self.writer.close()


def _header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for n, v in response.headers if n == name), None)


async def test_an_absolute_form_request_reaches_the_target_in_origin_form_without_hop_headers(
    proxy: Address, web_target: Address, server_only_name: str, server_only: Any
) -> None:
    async with asyncio.timeout(10):
        client = await HttpClient.open(proxy)
        response, body = await client.request(
            "GET",
            f"http://{server_only_name}:{web_target.port}/headers?q=1",
            [
                ("Host", "wrong.example"),
                ("Proxy-Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Upgrade", "websocket"),
                ("Connection", "X-Secret, Upgrade"),
                ("X-Secret", "hop"),
                ("X-Kept", "end to end"),
            ],
        )
        client.close()
    seen = json.loads(body)
    assert response.status_code == 200
    assert seen["path"] == "/headers?q=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == f"{server_only_name}:{web_target.port}"
    assert server_only.dials == 1  # the name went to the server, which alone resolves it
    assert headers["x-kept"] == "end to end"
    for hop in ("proxy-connection", "keep-alive", "te", "upgrade", "x-secret"):
        assert hop not in headers
    assert headers["connection"] == "close"  # one request per upstream stream


async def test_one_client_connection_serves_requests_to_different_hosts(
    proxy: Address, web_target: Address, echo_server: Address
) -> None:
    async with asyncio.timeout(10):
        client = await HttpClient.open(proxy)
        first, body1 = await client.request("GET", f"http://127.0.0.1:{web_target.port}/", [])
        assert (first.status_code, body1) == (200, b"hello from the target")
        refused = f"http://127.0.0.1:{free_port()}/"
        second, _ = await client.request("GET", f"http://localhost:{web_target.port}/chunked", [])
        assert client.conn.our_state is h11.DONE  # still reusable
        client.close()
        assert (await _exchange(proxy, f"GET {refused} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))[
            :12
        ] == b"HTTP/1.1 502"
    assert second.status_code == 200


async def test_a_chunked_answer_is_reframed_and_its_connection_headers_dropped(
    proxy: Address, web_target: Address
) -> None:
    async with asyncio.timeout(10):
        client = await HttpClient.open(proxy)
        response, body = await client.request(
            "GET", f"http://127.0.0.1:{web_target.port}/chunked", []
        )
        client.close()
    assert body == b"one two three"
    assert _header(response, b"x-drop") is None
    assert _header(response, b"transfer-encoding") == b"chunked"
    # an HTTP/1.0 client gets the answer delimited by the close instead
    raw = await _exchange(
        proxy, f"GET http://127.0.0.1:{web_target.port}/chunked HTTP/1.0\r\n\r\n".encode()
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert rest == b"one two three"


async def test_a_chunked_request_body_arrives_whole(proxy: Address, web_target: Address) -> None:
    request = (
        f"POST http://127.0.0.1:{web_target.port}/echo HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ).encode()
    async with asyncio.timeout(10):
        raw = await _exchange(proxy, request)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-length: 11" in head.lower()
    assert body == b"hello world"


async def test_connect_answers_200_then_relays_bytes_sent_with_the_request(
    proxy: Address, echo_server: Address, server_only_name: str, server_only: Any
) -> None:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        target = f"{server_only_name}:{echo_server.port}"  # only the server resolves it
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nearly".encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert await reader.readexactly(5) == b"early"
        writer.close()
    assert server_only.dials == 1


@pytest.mark.parametrize(
    ("host", "status"),
    [
        pytest.param("127.0.0.1:{closed}", 502, id="refused"),
        pytest.param("unreachable.test:80", 502, id="unreachable"),
        pytest.param("network-unreachable.test:80", 502, id="network-unreachable"),
        pytest.param("timed-out.test:80", 504, id="timed-out"),
        pytest.param("not-allowed.test:80", 403, id="not-allowed"),
    ],
)
@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_failures_map_to_status_codes_with_a_short_body(
    proxy: Address, host: str, status: int, method: str
) -> None:
    host = host.format(closed=free_port())
    target = host if method == "CONNECT" else f"http://{host}/"
    async with asyncio.timeout(10):
        raw = await _exchange(proxy, f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert body.startswith(b"flyway: ") and len(body) < 200


@pytest.mark.parametrize(
    ("credentials", "status"),
    [(None, 407), ("alice:wrong", 407), ("bob:s3cret", 407), ("alice:s3cret", 200)],
)
async def test_proxy_authorization_basic_is_checked(
    start_proxy: StartProxy, echo_server: Address, credentials: str | None, status: int
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    auth = ""
    if credentials:
        auth = f"Proxy-Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n"
    target = f"127.0.0.1:{echo_server.port}"
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 %d " % status)
    if status == 407:
        assert b'Proxy-Authenticate: Basic realm="flyway"' in head


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="origin-form"),
        pytest.param(b"GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="https-url"),
        pytest.param(b"CONNECT x:0 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="port-0"),
        pytest.param(b"CONNECT a%20b:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="odd-host"),
        pytest.param(
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
            431,
            id="100-KB-header",
        ),
    ],
)
async def test_bad_requests_get_an_error_and_a_close(
    proxy: Address, web_target: Address, data: bytes, status: int
) -> None:
    async with asyncio.timeout(10):
        raw = await _exchange(proxy, data)
        assert raw.startswith(b"HTTP/1.1 %d " % status)
        client = await HttpClient.open(proxy)  # nothing else is affected
        response, _ = await client.request("GET", f"http://127.0.0.1:{web_target.port}/", [])
        client.close()
    assert response.status_code == 200


# --- the README's promises on bodies, one by one, against a raw target --------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _raw_target(handler: Handler) -> AsyncIterator[str]:
    """A TCP target on 127.0.0.1 answering with ``handler``; yields "127.0.0.1:PORT"."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _head(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n\r\n")).lower()


async def test_expect_100_continue_is_passed_on_and_the_100_comes_back(proxy: Address) -> None:
    seen: list[bytes] = []

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _head(reader))
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # only now may the body come
        body = await reader.readexactly(5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body.upper())
        writer.close()

    async with _raw_target(target) as host, asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            f"POST http://{host}/up HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\n"
            "Content-Length: 5\r\n\r\n".encode()
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 \r\n\r\n"
        writer.write(b"hello")  # the body, after the 100
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(5) == b"HELLO"
        writer.close()
    assert b"\r\nexpect: 100-continue\r\n" in seen[0]


async def test_trailers_are_dropped_both_ways(proxy: Address) -> None:
    seen: list[bytes] = []

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head(reader)
        seen.append(head + await reader.readuntil(b"0\r\n\r\n"))
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Answer-Trailer\r\n\r\n"
            b"4\r\nbody\r\n0\r\nX-Answer-Trailer: theirs\r\n\r\n"
        )
        writer.close()

    async with _raw_target(target) as host, asyncio.timeout(10):
        request = (
            f"POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: X-Request-Trailer\r\nConnection: close\r\n\r\n"
            "5\r\nhello\r\n0\r\nX-Request-Trailer: mine\r\n\r\n"
        ).encode()
        raw = await _exchange(proxy, request)
    upstream = seen[0]
    assert upstream.endswith(b"5\r\nhello\r\n0\r\n\r\n")  # the body, and no trailer after it
    assert b"x-request-trailer" not in upstream  # nor its announcement (hop-by-hop)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"4\r\nbody\r\n0\r\n\r\n"
    assert b"x-answer-trailer" not in raw.lower()


async def test_an_answer_before_the_whole_request_body_is_sent_and_the_connection_closed(
    proxy: Address,
) -> None:
    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)  # answers at once, without reading the body
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    async with _raw_target(target) as host, asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            f"POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n"
            "only the start".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        assert await reader.readexactly(8) == b"too big!"
        # the rest of the body never comes through: the proxy closes the connection
        assert await reader.read(-1) == b""
        writer.close()


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_idle(
    proxy: Address, web_target: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpproxy, "KEEPALIVE_IDLE", 1.0)  # 60 s for users
    url = f"http://127.0.0.1:{web_target.port}/"
    async with asyncio.timeout(10):
        client = await HttpClient.open(proxy)
        for _ in range(2):  # kept alive between requests that come at once
            response, body = await client.request("GET", url, [])
            assert (response.status_code, body) == (200, b"hello from the target")
        assert await client.reader.read(-1) == b""  # then closed, idle
        client.close()
