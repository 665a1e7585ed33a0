"""A request body sent up a pooled connection as it arrives, after its head.

Bodies up to ``BUFFER`` bytes are read whole before the request takes a pooled
connection (``proxy.py``: nginx's ``proxy_request_buffering``), and so are the
first ``BUFFER`` bytes of a chunked one; what is left is streamed from here.
A body declared over ``BUFFER`` is not waited for: its head leaves first, before
any body byte came, since a site answers some requests from the head alone
(nginx's 413 for a declared length over its limit, at once). The client's body
follows in pieces as they come, chunked again when the client chunked it
(aiohttp de-chunked it on the way in). When all of it went up, the site's read
timeout starts (``UpstreamConnection.sent``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    from aiohttp.streams import StreamReader

    from flyway_fallback.reverse_proxy.upstream import UpstreamConnection

__all__ = ["BUFFER", "chunk", "send_body"]

log = logging.getLogger(__name__)
LAST_CHUNK = b"0\r\n\r\n"
BUFFER = 1 << 16  # a request body read before a pooled connection is taken, at most


def chunk(piece: bytes) -> bytes:
    """``piece`` framed as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(piece), piece)


async def send_body(
    connection: UpstreamConnection, body: StreamReader, *, chunked: bool, first: bytes = b""
) -> None:
    """Copy ``first``, then the client's ``body``, up ``connection`` to its end.

    If either side fails, abort the connection.
    """
    try:
        piece = first
        while piece or (piece := await body.readany()):
            connection.write(chunk(piece) if chunked else piece)
            await connection.drain()
            piece = b""
        if chunked:
            connection.write(LAST_CHUNK)
        connection.sent()
    except (OSError, HttpProcessingError) as exc:  # the client's body broke, or the site left
        log.debug("a request body did not reach the site whole: %r", exc)
        connection.abort()
