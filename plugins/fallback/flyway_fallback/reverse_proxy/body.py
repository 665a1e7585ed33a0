"""A request body streamed to the upstream as it arrives, its head sent before its first byte.

aiohttp's client holds a request's head back until the first body bytes are
written (so that small requests leave in one packet). A site answers some
requests from the head alone (nginx's 413 for a declared length over its limit,
before any body came): so this payload sends the head at once, then copies the
client's body in pieces as they come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import payload

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.streams import StreamReader

__all__ = ["RequestBody"]

_PIECE = 1 << 16


class RequestBody(payload.Payload):
    """The client's body (``StreamReader``), ``size`` bytes (None: chunked up)."""

    def __init__(self, reader: StreamReader, size: int | None, **kwargs: Any) -> None:
        super().__init__(reader, **kwargs)
        self._reader = reader
        self._size = size

    @property
    def size(self) -> int | None:
        return self._size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed request body is not decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        writer.send_headers()
        await writer.drain()
        while piece := await self._reader.readany():
            await writer.write(piece)
