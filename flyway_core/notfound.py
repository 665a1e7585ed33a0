"""Built-in plugin: with no ``-P``, answer non-tunnel requests as a stock nginx with no site would.

That is a 404 page for every path and method, and nginx's own answers where it
gives another before looking for a page: 400 for ``CONNECT`` and ``OPTIONS *``,
405 for ``TRACE``, 413 for a declared body over its stock 1 MiB, 505 for HTTP/2 on
the plain port. Pages and headers come from ``frontdoor_pages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flyway_core.frontdoor_pages import page
from flyway_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from aiohttp import web

    from flyway_core.settings import Settings

__all__ = ["NotFoundFallback"]

MAX_BODY = 1 << 20  # nginx's stock client_max_body_size (1m)


@hookimpl(trylast=True)
def fallback_for(spec: str | None, settings: Settings) -> NotFoundFallback | None:
    return NotFoundFallback() if spec is None else None


class NotFoundFallback:
    """Every request gets the answer of an nginx that serves no files."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status = _status(request)
        if status == 404 and request.can_read_body:
            await request.release()
        return page(status, request, close=status != 404)

    def __str__(self) -> str:
        return "404 page"


def _status(request: web.Request) -> int:
    if request.version >= (2, 0):
        return 505
    if request.method == "CONNECT" or not request.raw_path.startswith(("/", "http")):
        return 400  # nginx 1.22 takes neither authority-form nor asterisk-form targets
    if request.method == "TRACE":
        return 405
    if (request.content_length or 0) > MAX_BODY:
        return 413
    return 404
