"""Probes a stranger might send a flyway port, and what came back: raw bytes over a socket.

``PROBES`` is the corpus (named, reusable: the ``-P`` fallback tests send the
same list); ``answer(port, probe)`` sends one to 127.0.0.1 and reads until the
server closes or goes quiet; ``Answer`` splits what came back into responses and
says how the connection ended (closed or held; FIN or RST; after how long).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import random
import re
import ssl
import time
from dataclasses import dataclass, field

__all__ = ["PROBES", "Answer", "Probe", "Response", "answer", "tls_client_hello"]

_RANDOM = random.Random(10)  # the corpus is the same on every run


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client (Python's ssl), as a scanner on the plain port."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def _request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    data: bytes


_GZ = gzip.compress(b"\0" * (1 << 20))
_KEY = base64.b64encode(_RANDOM.randbytes(16)).decode()
_SID = base64.urlsafe_b64encode(_RANDOM.randbytes(90)).decode().rstrip("=")

PROBES = [
    Probe("malformed request line", b"GET / HTTTP/1.1\r\nHost: x\r\n\r\n"),
    Probe("garbage request line", b"garbage\r\n\r\n"),
    Probe("header line without colon", _request("GET / HTTP/1.1\nHost: x\nBadHeader\n")),
    Probe("10 KB header", _request("GET / HTTP/1.1\nHost: x\nX-Long: " + "a" * 10240 + "\n")),
    Probe("9 KB URI", _request("GET /" + "a" * 9000 + " HTTP/1.1\nHost: x\n")),
    *(Probe(f"{n} random bytes", _RANDOM.randbytes(n)) for n in (1, 17, 64, 600)),
    Probe("TLS ClientHello", tls_client_hello()),
    Probe("SOCKS5 greeting", b"\x05\x01\x00"),
    Probe("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n"),
    Probe("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    Probe("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
    Probe("HTTP/2.0 request line", _request("GET / HTTP/2.0\nHost: x\n")),
    Probe("plain GET", _request("GET /index.html HTTP/1.1\nHost: x\n")),
    Probe("GET /", _request("GET / HTTP/1.1\nHost: x\n")),
    Probe("missing path", _request("GET /no/such/page.html HTTP/1.1\nHost: x\n")),
    Probe("HEAD", _request("HEAD / HTTP/1.1\nHost: x\n")),
    Probe("gzip-accepting browser", _request("GET / HTTP/1.1\nHost: x\nAccept-Encoding: gzip\n")),
    Probe("MSIE", _request("GET /a HTTP/1.1\nHost: x\nUser-Agent: Mozilla/4.0 (MSIE 8.0)\n")),
    Probe("pipelined", _request("GET /a HTTP/1.1\nHost: x\n") * 2),
    Probe("OPTIONS *", _request("OPTIONS * HTTP/1.1\nHost: x\n")),
    Probe("absolute URI", _request("GET http://example.com/ HTTP/1.1\nHost: example.com\n")),
    Probe("CONNECT", _request("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n")),
    Probe("TRACE", _request("TRACE / HTTP/1.1\nHost: x\n")),
    Probe("PUT", _request("PUT /a HTTP/1.1\nHost: x\nContent-Length: 3\n", b"abc")),
    Probe("DELETE", _request("DELETE /a HTTP/1.1\nHost: x\n")),
    Probe(
        "POST of random bytes",
        _request("POST / HTTP/1.1\nHost: x\nContent-Length: 300\n", _RANDOM.randbytes(300)),
    ),
    Probe(
        "POST of random bytes to a tunnel-like path",
        _request(
            f"POST /{_RANDOM.randbytes(8).hex()} HTTP/1.1\nHost: x\nContent-Length: 1000\n",
            _RANDOM.randbytes(1000),
        ),
    ),
    Probe(
        "POST over 1 MiB declared",
        _request("POST / HTTP/1.1\nHost: x\nContent-Length: 2000000\n"),
    ),
    Probe(
        "POST of 2 MB",
        _request("POST / HTTP/1.1\nHost: x\nContent-Length: 2000000\n", b"\1" * 2_000_000),
    ),
    Probe(
        "WebSocket upgrade with a random key",
        _request(
            "GET / HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n"
            f"Sec-WebSocket-Key: {_KEY}\nSec-WebSocket-Version: 13\n"
        ),
    ),
    Probe(
        "WebSocket upgrade with a random sid",
        _request(
            "GET / HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n"
            f"Sec-WebSocket-Key: {_KEY}\nSec-WebSocket-Version: 13\nCookie: sid={_SID}\n"
        ),
    ),
    Probe(
        "gzip body",
        _request(
            f"POST / HTTP/1.1\nHost: x\nContent-Encoding: gzip\nContent-Length: {len(_GZ)}\n", _GZ
        ),
    ),
    Probe(
        "broken gzip body",
        _request("POST / HTTP/1.1\nHost: x\nContent-Encoding: gzip\nContent-Length: 4\n", b"oops"),
    ),
    Probe(
        "chunked body",
        _request(
            "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n", b"3\r\nabc\r\n0\r\n\r\n"
        ),
    ),
    Probe(
        "Expect: something",
        _request("POST /a HTTP/1.1\nHost: x\nExpect: something\nContent-Length: 1\n", b"a"),
    ),
    Probe(
        "Expect: 100-continue",
        _request("POST /a HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 2\n", b"ab"),
    ),
    Probe("silence", b""),
]


@dataclass(frozen=True, slots=True)
class Response:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def comparable(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """Everything but the Date."""
        return (self.status_line, [h for h in self.headers if h[0] != "Date"], self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    raw: bytes
    closed: bool  # the server closed the connection (else it went quiet, holding it)
    responses: list[Response] = field(default_factory=list)
    reset: bool = False  # it closed with an RST (else with a FIN, or not at all)
    elapsed: float = 0.0  # seconds from sending to the close (or to the last byte read)

    @property
    def ending(self) -> str:
        """How the connection ended: ``"held"``, ``"FIN"`` or ``"RST"``."""
        return "RST" if self.reset else "FIN" if self.closed else "held"

    @classmethod
    def parse(
        cls, raw: bytes, closed: bool, *, reset: bool = False, elapsed: float = 0.0
    ) -> Answer:
        responses, rest = [], raw
        while b"\r\n\r\n" in rest:
            head, rest = rest.split(b"\r\n\r\n", 1)
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines)]
            response = Response(status, headers, b"")
            if response.status == 100:
                continue
            if (length := response.header("Content-Length")) is not None:
                body, rest = rest[: int(length)], rest[int(length) :]
            elif response.header("Transfer-Encoding") == "chunked":
                body, rest = _dechunk(rest)
            else:
                body, rest = rest, b""
            responses.append(Response(status, headers, body))
        return cls(raw, closed, responses, reset, elapsed)


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while m := re.match(rb"([0-9a-fA-F]+)\r\n", data):
        size = int(m.group(1), 16)
        start = m.end()
        body += data[start : start + size]
        data = data[start + size + 2 :]
        if size == 0:
            break
    return body, data


async def answer(port: int, probe: Probe, *, quiet: float = 0.5, limit: float = 5.0) -> Answer:
    """Send ``probe`` to 127.0.0.1 ``port``; read until closed or ``quiet`` seconds of silence."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw, closed, reset = b"", False, False
    start = last = time.perf_counter()
    try:
        writer.write(probe.data)
        async with asyncio.timeout(limit):
            while True:
                try:
                    async with asyncio.timeout(quiet):
                        chunk = await reader.read(1 << 16)
                except TimeoutError:
                    break
                except ConnectionError:
                    closed = reset = True
                    break
                last = time.perf_counter()
                if not chunk:
                    closed = True
                    break
                raw += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Answer.parse(raw, closed, reset=reset, elapsed=last - start)
