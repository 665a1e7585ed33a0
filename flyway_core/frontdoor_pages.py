"""What the front door says on its own: stock nginx's headers and error pages, byte for byte.

The default fallback and every answer the front door makes itself (malformed
requests, failures) imitate nginx 1.22.1 as Debian 12 ships it (``server_tokens``
on): the same ``Server`` header, status lines, reason phrases, header order,
``Connection`` handling and page bodies, recorded from the real thing. Only the
``Date`` differs. ``stamp_headers`` gives every other response (tunnel answers,
the WebSocket 101) the same ``Server`` header and order, so nothing names aiohttp.
"""

from __future__ import annotations

import functools
import zlib
from email.utils import formatdate
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

__all__ = [
    "SERVER",
    "ClosingPage",
    "accepts_gzip",
    "expect_continue",
    "page",
    "page_body",
    "stamp_headers",
]

SERVER = "nginx/1.22.1"  # Debian 12's nginx; keep in step with _TAIL

# nginx's reason phrases (ngx_http_status_lines), which differ from Python's for some
REASONS = {
    301: "Moved Permanently",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    408: "Request Time-out",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    494: "Bad Request",  # nginx's own code for "Request Header Or Cookie Too Large", sent as 400
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Time-out",
    505: "HTTP Version Not Supported",
}
HEADER_TOO_LARGE = 494
_TAIL = "<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
_MSIE_PADDING = "<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6
_FIRST = ("Server", "Date", "Content-Type", "Content-Length", "Transfer-Encoding", "Connection")
_FIRST_LOWER = frozenset(name.lower() for name in _FIRST)
_GZIPPED = (403, 404)  # the statuses Debian's "gzip on" compresses (with 200)


@functools.cache
def page_body(status: int, *, msie: bool = False) -> bytes:
    """Return nginx's error page for ``status`` (494: headers too large)."""
    if status == HEADER_TOO_LARGE:
        text = (
            "<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n"
            "<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
            "<center>Request Header Or Cookie Too Large</center>\r\n"
        )
    else:
        title = f"{status} {REASONS[status]}"
        text = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        text += f"<center><h1>{title}</h1></center>\r\n"
    return (text + _TAIL + (_MSIE_PADDING if msie else "")).encode()


def _is_msie(request: web.BaseRequest) -> bool:
    return "MSIE " in request.headers.get("User-Agent", "")


def page(status: int, request: web.BaseRequest, *, close: bool = False) -> web.StreamResponse:
    """Return nginx's answer with its error page for ``status``, as it would send it.

    ``close``: nginx closes the connection after this answer (errors other than 404).
    """
    body = page_body(status, msie=_is_msie(request))
    if close or request.version < (1, 1):  # nginx answers HTTP/1.0 with an HTTP/1.1 status line
        return ClosingPage(status, body, keep_alive=not close and request.keep_alive)
    code = 400 if status == HEADER_TOO_LARGE else status
    headers = {"Server": SERVER, "Content-Type": "text/html"}
    gzip = code in _GZIPPED and request.method != "HEAD" and accepts_gzip(request)
    if gzip:  # nginx's gzip filter at its stock level 1: the same bytes, chunked
        deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
        body = deflate.compress(body) + deflate.flush()
        headers["Content-Encoding"] = "gzip"
    response = web.Response(status=code, reason=REASONS[status], body=body, headers=headers)
    if gzip:
        response.enable_chunked_encoding()
    return response


def accepts_gzip(request: web.BaseRequest) -> bool:
    """As nginx reads ``Accept-Encoding`` (HTTP/1.1 and up; ``gzip;q=0`` refuses)."""
    if request.version < (1, 1):
        return False
    for coding in request.headers.get("Accept-Encoding", "").lower().split(","):
        name, _, params = coding.partition(";")
        if name.strip() in ("gzip", "x-gzip"):
            q = params.replace(" ", "").removeprefix("q=")
            return not (params and q.strip("0.") == "" and q[:1] == "0")
    return False


class ClosingPage(web.StreamResponse):
    """An error page written whole with an ``HTTP/1.1`` status line, then the connection closes.

    aiohttp answers in the request's HTTP version, and a request it could not parse
    counts as HTTP/1.0; nginx always says HTTP/1.1. This response writes its status
    line and headers itself through the request's writer (public ``AbstractStreamWriter``
    calls), so it is not kept alive: right for what nginx closes after. ``keep_alive``
    keeps it open instead (an HTTP/1.0 request that asked for keep-alive).
    """

    def __init__(self, status: int, body: bytes, *, keep_alive: bool = False) -> None:
        super().__init__(status=400 if status == HEADER_TOO_LARGE else status)
        self._page_status = status
        self._page = body
        self._keeps = keep_alive
        self._out: AbstractStreamWriter | None = None
        self._head = False

    @property
    def keep_alive(self) -> bool:
        return self._keeps

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._out is None:
            self._out = request.writer
            self._head = request.method == "HEAD"
            headers = CIMultiDict(
                [
                    ("Server", SERVER),
                    ("Date", formatdate(usegmt=True)),
                    ("Content-Type", "text/html"),
                    ("Content-Length", str(len(self._page))),
                    ("Connection", "keep-alive" if self._keeps else "close"),
                ]
            )
            status = f"HTTP/1.1 {self.status} {REASONS[self._page_status]}"
            await self._out.write_headers(status, headers)
        return self._out

    async def write_eof(self, data: bytes = b"") -> None:
        if self._out is not None:
            await self._out.write_eof(b"" if self._head else self._page)


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: nginx's ``Server`` header, header order and ``Connection``."""
    headers = response.headers
    headers["Server"] = SERVER
    if "Connection" not in headers:
        headers["Connection"] = "keep-alive" if response.keep_alive else "close"
    first = [(name, headers[name]) for name in _FIRST if name in headers]
    rest = [(k, v) for k, v in headers.items() if k.lower() not in _FIRST_LOWER]
    headers.clear()
    headers.extend(first + rest)


async def expect_continue(request: web.Request) -> None:
    """Answer ``Expect: 100-continue``; ignore any other ``Expect``, as nginx does (not 417)."""
    if request.version == (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
