"""An answer written as nginx writes it: its status line, headers in its order, then the body.

``HeadAnswer`` writes its head through the request's writer (public
``AbstractStreamWriter`` calls, as the door's ``ClosingPage`` does): an
``HTTP/1.1`` status line whatever the request's version, only the headers given,
in the order given. The body is bytes (small files, pages; chunked when asked, as
nginx's gzip filter sends), a file region sent with ``loop.sendfile`` (the call
aiohttp's ``FileResponse`` makes; it falls back to reads and writes where the
transport cannot, as with TLS), a file gzipped as it is read, or pieces of bytes
and file regions (multipart ranges) copied 64 KiB at a time: large files never
pass through memory whole.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from flyway_core.frontdoor_pages import SERVER

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

__all__ = ["Body", "FileRegion", "GzippedFile", "HeadAnswer"]

# nginx writes these (those present) before Connection, and every other header after it
_BEFORE_CONNECTION = frozenset(
    {"Content-Type", "Content-Length", "Last-Modified", "Transfer-Encoding", "Location"}
)


@dataclass(frozen=True, slots=True)
class FileRegion:
    """``count`` bytes of the file at ``path`` from ``offset``."""

    path: str
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class GzippedFile:
    """The file at ``path``, gzipped as it is read (nginx's gzip filter at level 1)."""

    path: str


Body = bytes | FileRegion | GzippedFile | tuple[bytes | FileRegion, ...]
_PIECE = 1 << 16


class HeadAnswer(web.StreamResponse):
    """Status, headers (after ``Server`` and ``Date``) and a body, written as nginx would.

    ``keep_alive`` is what ``Connection`` says; ``close_after`` closes the connection
    after the answer anyway, as nginx does after some answers that say keep-alive.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]],
        body: Body = b"",
        *,
        keep_alive: bool,
        chunked: bool = False,
        head_only: bool = False,
        close_after: bool = False,
    ) -> None:
        super().__init__(status=status, reason=reason)
        connection = ("Connection", "keep-alive" if keep_alive else "close")
        framing = [h for h in headers if h[0] in _BEFORE_CONNECTION]
        rest = [h for h in headers if h[0] not in _BEFORE_CONNECTION]
        date = ("Date", _now())
        self._head = CIMultiDict([("Server", SERVER), date, *framing, connection, *rest])
        self._keeps = keep_alive and not close_after  # close_after: whatever the head says
        self._payload = body
        self._chunked = chunked
        self._head_only = head_only
        self._out: AbstractStreamWriter | None = None

    @property
    def keep_alive(self) -> bool:
        return self._keeps

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._out is not None:
            return self._out
        self._out = writer = request.writer
        if self._chunked and not self._head_only:
            writer.enable_chunking()
        await writer.write_headers(f"HTTP/1.1 {self.status} {self.reason}", self._head)
        body = self._payload
        if self._head_only:
            return writer
        if isinstance(body, FileRegion):
            writer.send_headers()
            await writer.drain()
            await _sendfile(request, body)
        elif isinstance(body, GzippedFile):
            await _gzip(writer, body)
        elif isinstance(body, tuple):
            for piece in body:
                if isinstance(piece, FileRegion):
                    await _copy(writer, piece)
                else:
                    await writer.write(piece)
        elif body:
            await writer.write(body)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._out is not None and not self._eof_sent:
            self._eof_sent = True
            await self._out.write_eof()


def _now() -> str:
    """The ``Date`` header's value, formatted once a second."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[:] = [second, formatdate(second, usegmt=True)]
    return str(_clock[1])


_clock: list[int | str] = [0, ""]


async def _copy(writer: AbstractStreamWriter, region: FileRegion) -> None:
    """Write a file region a piece at a time (between other bytes of one answer)."""
    with open(region.path, "rb") as file:  # noqa: ASYNC230  # a local file, read in pieces
        file.seek(region.offset)
        left = region.count
        while left > 0 and (piece := file.read(min(_PIECE, left))):
            await writer.write(piece)
            left -= len(piece)


async def _gzip(writer: AbstractStreamWriter, body: GzippedFile) -> None:
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(body.path, "rb") as file:  # noqa: ASYNC230  # a local file, read in pieces
        while piece := file.read(_PIECE):
            packed = deflate.compress(piece)
            if packed:
                await writer.write(packed)
    await writer.write(deflate.flush())


async def _sendfile(request: web.BaseRequest, region: FileRegion) -> None:
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left")
    loop = asyncio.get_running_loop()
    with open(region.path, "rb") as file:  # noqa: ASYNC230  # a local file, opened once
        try:
            await loop.sendfile(transport, file, region.offset, region.count)
            return
        except NotImplementedError:  # uvloop has no sendfile: read and write, as aiohttp does
            pass
    await _copy(request.writer, region)
