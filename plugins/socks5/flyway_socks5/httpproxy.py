"""An HTTP proxy: ``CONNECT host:port``, and absolute-form requests for plain ``http://``.

Theory of operation: h11 parses what the client sends (sans-I/O, with its head
size limit). A CONNECT opens a stream, answers 200 once the server reached the
target, and relays. Any other request opens a new stream per request to the
URL's host, sends the request there in origin form with hop-by-hop headers
removed (a second h11 connection, client side, frames it), and streams the
answer back through the first, which frames it for this client (chunked, or a
close for HTTP/1.0). The client's connection stays open across requests to
any hosts; the upstream side is one request per stream (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11

from flyway_core import Address, ConfigError, StreamResetError, TunnelUnavailable
from flyway_core.address import split_host_port
from flyway_core.protocol import ResetReason
from flyway_socks5.base import (
    Client,
    HandshakeError,
    give_up_stream,
    log,
    valid_hostname,
    wait_accepted,
)

if TYPE_CHECKING:
    from flyway_core.interfaces import Stream

__all__ = ["HOP_BY_HOP", "MAX_HEAD", "STATUS_FOR", "serve"]

MAX_HEAD = 64 * 1024  # bytes of a request head; more gets 431
KEEPALIVE_IDLE = 60.0  # seconds an idle client connection may wait for its next request
BODY_IDLE = 120.0  # seconds without a byte of a request or response body
READ_SIZE = 1 << 16
FINISH_WAIT = 0.5  # seconds to wait for the target's close after a whole answer
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
STATUS_FOR: dict[int, int] = {
    ResetReason.REFUSED: 502,
    ResetReason.UNREACHABLE: 502,
    ResetReason.NETWORK_UNREACHABLE: 502,
    ResetReason.NAME_NOT_FOUND: 502,
    ResetReason.TIMED_OUT: 504,
    ResetReason.NOT_ALLOWED: 403,
}
_REASONS = {
    200: b"Connection established",
    400: b"Bad Request",
    403: b"Forbidden",
    407: b"Proxy Authentication Required",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    504: b"Gateway Timeout",
}


def _answer(status: int, text: str, *extra: tuple[bytes, bytes]) -> bytes:
    """Return a short plain-text response that closes the connection."""
    body = text.encode() + b"\n"
    reason = _REASONS.get(status, b"Error")
    head = [b"HTTP/1.1 %d %s" % (status, reason)]
    head += [b"%s: %s" % pair for pair in extra]
    head += [
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _failure(reason: int, message: str) -> bytes:
    return _answer(STATUS_FOR.get(reason, 502), f"flyway: {message}")


async def serve(client: Client, first: bytes) -> None:
    """Handle an HTTP proxy client whose first byte was already read."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(first)
    deadline = client.deadline
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                request = await _next_event(client, conn)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
            raise HandshakeError(f"HTTP: {exc}", _answer(status, f"flyway: {exc}")) from None
        if not isinstance(request, h11.Request):
            return  # the client closed between requests
        if not _authorized(client, request):
            challenge = (b"Proxy-Authenticate", b'Basic realm="flyway"')
            raise HandshakeError("HTTP: no or wrong credentials", _answer(407, "", challenge))
        if request.method == b"CONNECT":
            await _tunnel(client, conn, request)
            return
        if not await _forward(client, conn, request):
            return
        conn.start_next_cycle()
        deadline = loop.time() + KEEPALIVE_IDLE


async def _next_event(client: Client, conn: h11.Connection) -> object:
    """Return the client's next h11 event, reading as much as it needs."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await client.reader.read(READ_SIZE))


def _authorized(client: Client, request: h11.Request) -> bool:
    if client.credentials is None:
        return True
    for name, value in request.headers:
        if name != b"proxy-authorization":
            continue
        scheme, _, encoded = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            continue
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except binascii.Error:
            return False
        return client.credentials.check(user, password)
    return False


def _host(host: str) -> str:
    """Return ``host`` if it is an IP literal or a domain name; HandshakeError (400) if not."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host.isascii() or not valid_hostname(host.encode()):
        raise HandshakeError(f"HTTP: bad host {host[:64]!r}", _answer(400, "flyway: bad host"))
    return host


async def _tunnel(client: Client, conn: h11.Connection, request: h11.Request) -> None:
    try:
        host, port = split_host_port(request.target.decode("ascii"))
    except (ConfigError, UnicodeDecodeError):
        raise HandshakeError("HTTP: bad CONNECT target", _answer(400, "bad target")) from None
    if port == 0:
        raise HandshakeError("HTTP: CONNECT to port 0", _answer(400, "flyway: bad port"))
    target = Address(_host(host), port)
    while conn.next_event() not in (h11.PAUSED, h11.NEED_DATA):
        pass  # the request's end: a CONNECT has no body
    trailing, _ = conn.trailing_data
    await client.connect(
        target,
        success=lambda _: b"HTTP/1.1 200 Connection established\r\n\r\n",
        failure=_failure,
        already_read=trailing,
    )


def _end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, those the Connection header names included."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]


async def _forward(client: Client, conn: h11.Connection, request: h11.Request) -> bool:
    """Send one absolute-form request upstream and its answer back; return keep-alive."""
    try:
        url = urlsplit(request.target.decode("ascii"))
        port = url.port or 80
    except (UnicodeDecodeError, ValueError):
        raise HandshakeError("HTTP: bad request target", _answer(400, "bad target")) from None
    if url.scheme.lower() != "http" or not url.hostname:
        why = "only absolute http:// URLs and CONNECT are proxied"
        raise HandshakeError(f"HTTP: {request.target[:64]!r}", _answer(400, f"flyway: {why}"))
    host = _host(url.hostname)
    authority = url.netloc.rpartition("@")[2].encode()
    headers = [(b"host", authority)]
    headers += [(n, v) for n, v in _end_to_end(list(request.headers)) if n != b"host"]
    if any(name == b"transfer-encoding" for name, _ in request.headers):
        headers.append((b"transfer-encoding", b"chunked"))
    headers.append((b"connection", b"close"))
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    upstream = h11.Connection(h11.CLIENT)
    failed: bytes | None = None
    origin_form = h11.Request(method=request.method, target=path.encode(), headers=headers)
    try:
        async with client.tunnel.open_stream(Address(host, port), origin=client.origin) as stream:
            reason, message = await wait_accepted(stream, lambda: give_up_stream(stream))
            if reason is not None:
                raise HandshakeError(f"HTTP: {host}:{port}: {message}", _failure(reason, message))
            await stream.write(upstream.send(origin_form))
            try:
                async with asyncio.TaskGroup() as tasks:
                    body = tasks.create_task(_send_body(client, conn, upstream, stream))
                    failed = await _answer_back(client, conn, upstream, stream)
                    if not body.done():  # answered before the whole request came: close after
                        body.cancel()
                        failed = failed or b""
                if failed is None:
                    await _finish(stream)
            except* (ConnectionError, OSError, TimeoutError, StreamResetError, h11.ProtocolError):
                log.debug("%s: request to %s:%s cut", client.origin, host, port)
                failed = b""  # just close
    except TunnelUnavailable:
        down = _failure(ResetReason.INTERNAL, "tunnel unavailable")
        raise HandshakeError("HTTP: tunnel unavailable", down) from None
    if failed is not None:
        await client.refuse(failed)
        return False
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _finish(stream: Stream) -> None:
    """End our side and read to the target's close (it was asked to), so the stream ends well.

    A target that ignores ``Connection: close`` costs the client FINISH_WAIT before
    its next request; then the stream is reset (reported as cancelled).
    """
    stream.end()
    with contextlib.suppress(TimeoutError, StreamResetError):
        async with asyncio.timeout(FINISH_WAIT):
            while await stream.read():
                pass


async def _send_body(
    client: Client, conn: h11.Connection, upstream: h11.Connection, stream: Stream
) -> None:
    while True:
        async with asyncio.timeout(BODY_IDLE):
            event = await _next_event(client, conn)
        if isinstance(event, h11.Data):
            await stream.write(upstream.send(h11.Data(data=event.data)))
        elif isinstance(event, h11.EndOfMessage):
            await stream.write(upstream.send(h11.EndOfMessage()))  # trailers are hop-by-hop
            return
        else:
            raise ConnectionResetError("the client went away during its request body")


async def _answer_back(
    client: Client, conn: h11.Connection, upstream: h11.Connection, stream: Stream
) -> bytes | None:
    """Stream the target's answer to the client; None when whole, else what to send and close."""
    started = False
    try:
        while True:
            event = upstream.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout(BODY_IDLE):
                    upstream.receive_data(await stream.read())
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 100:
                    go_on = h11.InformationalResponse(status_code=100, headers=[])
                    client.writer.write(conn.send(go_on) or b"")
                continue
            if isinstance(event, h11.Response):
                started = True
                response = h11.Response(
                    status_code=event.status_code,
                    reason=event.reason,
                    headers=_end_to_end(list(event.headers)),
                )
                client.writer.write(conn.send(response) or b"")
            elif isinstance(event, h11.Data):
                client.writer.write(conn.send(h11.Data(data=event.data)) or b"")
            elif isinstance(event, h11.EndOfMessage):
                client.writer.write(conn.send(h11.EndOfMessage()) or b"")
                await client.writer.drain()
                return None
            else:
                raise h11.RemoteProtocolError("the target closed before answering")
            async with asyncio.timeout(BODY_IDLE):
                await client.writer.drain()
    except (h11.RemoteProtocolError, StreamResetError) as exc:
        log.debug("%s: upstream: %s", client.origin, exc)
        if started:
            client.writer.transport.abort()  # a cut answer must not look complete
            return b""
        return _answer(502, f"flyway: {exc}")
