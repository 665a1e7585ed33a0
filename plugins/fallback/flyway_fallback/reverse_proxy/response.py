"""The upstream's answer as the client gets it: its status line, its headers, its body, streamed.

aiohttp's ``StreamResponse`` writes ``HTTP/<the request's version>`` and adds its
own ``Server``, ``Date`` and ``Connection``; a site answers an HTTP/1.0 request
with its own status line and headers. ``ProxiedResponse`` writes the head itself
through the request's writer (public ``AbstractStreamWriter`` calls, as the door's
``ClosingPage`` does) and then the body as it comes, re-chunked when the upstream
chunked it; the head leaves with the first body bytes when they are already there
(one write, as nginx's ``writev``), else at once. Whether the client connection
stays open is what the upstream said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from flyway_fallback.reverse_proxy.headers import connection_tokens, response_headers

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.http_parser import RawResponseMessage
    from aiohttp.streams import StreamReader

__all__ = ["ProxiedResponse"]


_FRAMING = 64  # a chunk's size line and end, the framing headers: an upper bound


def _has_no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200


class ProxiedResponse(web.StreamResponse):
    """Writes the upstream's head (``message``) verbatim but ``Connection``, then its body."""

    def __init__(
        self,
        message: RawResponseMessage,
        body: StreamReader,
        *,
        client_keeps_alive: bool,
        location: Callable[[str], str] = lambda value: value,
    ) -> None:
        # bytes of the body are here already: the head goes out with them, in one write
        self._body_ready = body.total_bytes > 0
        super().__init__(status=message.code, reason=message.reason)
        self._upstream_headers = response_headers(message.raw_headers)
        if "Location" in self._upstream_headers:
            self._upstream_headers["Location"] = location(self._upstream_headers["Location"])
        tokens = connection_tokens(self._upstream_headers.getall("Connection", []))
        major, minor = message.version
        self._status_line = f"HTTP/{major}.{minor} {message.code} {message.reason}"
        chunked = message.chunked
        framed = chunked or "Content-Length" in self._upstream_headers
        self._chunked = chunked
        self._keeps = client_keeps_alive and "close" not in tokens
        self._framed = framed
        self._out: AbstractStreamWriter | None = None
        self._no_body = False
        self._high: int | None = None
        self._head_size = 0  # what of the head leaves with the first body bytes
        if self._body_ready:
            self._head_size = len(self._status_line) + sum(
                len(name) + len(value) + 4 for name, value in self._upstream_headers.items()
            )

    @property
    def keep_alive(self) -> bool:
        return self._keeps

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._out is not None:
            return self._out
        self._no_body = _has_no_body(request.method, self.status)
        if not self._framed and not self._no_body:
            self._keeps = False  # the body ends when the connection does
        headers = self._upstream_headers
        if "Connection" in headers:
            headers["Connection"] = "keep-alive" if self._keeps else "close"
        elif not self._keeps and request.version >= (1, 1):
            headers["Connection"] = "close"
        self._out = writer = request.writer
        if self._chunked and not self._no_body:
            writer.enable_chunking()
        await writer.write_headers(self._status_line, headers)
        if not self._body_ready:
            writer.send_headers()  # now: a slow body must not hold the head back
        return writer

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._out is None:
            raise RuntimeError("write() before prepare()")
        if not self._no_body and data:
            await self._out.write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        if self._out is not None and not self._eof_sent:
            self._eof_sent = True
            await self._out.write_eof(b"" if self._no_body else data)

    def can_wait(self, size: int) -> bool:
        """Whether writing ``size`` more bytes may have to wait for the client.

        That is when the transport's buffer would go over its high-water mark
        (or is still draining from there): only then is a send timeout worth a timer.
        """
        out = self._out
        transport = out.transport if out is not None else None
        if transport is None:
            return False
        if self._high is None:
            try:
                self._high = transport.get_write_buffer_limits()[1]
            except (AttributeError, NotImplementedError):  # a transport without the call
                self._high = 0
        protocol = getattr(out, "protocol", None)
        if protocol is not None and protocol.writing_paused:
            return True
        size, self._head_size = size + self._head_size, 0
        return transport.get_write_buffer_size() + size + _FRAMING > self._high
