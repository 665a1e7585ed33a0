"""An aiohttp application served on 127.0.0.1 for a test: a site, a target, an upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

__all__ = ["web_site"]


@contextlib.asynccontextmanager
async def web_site(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on a free port of 127.0.0.1 (no access log); yield the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
