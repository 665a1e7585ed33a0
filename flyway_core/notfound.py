"""Built-in plugin: with no ``-P``, answer non-tunnel requests like a plain web server's 404."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from flyway_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from flyway_core.settings import Settings

__all__ = ["NotFoundFallback"]

_PAGE = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@hookimpl(trylast=True)
def fallback_for(spec: str | None, settings: Settings) -> NotFoundFallback | None:
    return NotFoundFallback() if spec is None else None


class NotFoundFallback:
    """Every request gets the same ordinary 404 page."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.can_read_body:
            await request.release()
        return web.Response(
            status=404,
            text=_PAGE,
            content_type="text/html",
            headers={"Server": "nginx"},
        )

    def __str__(self) -> str:
        return "404 page"
