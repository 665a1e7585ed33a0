"""A load balancer's sticky cookie is kept for the session's requests (what lets several
server processes share one port: the balancer pins a session to one of them)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from flyway_core import Address
from flyway_core.testing import hashed_exchange, run_pair


class StickyBalancer:
    """A tiny reverse proxy that sets a route cookie and records what comes back."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.upstream = ""
        self._http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        self.seen.append(request.cookies.get("route"))
        body = await request.read()
        async with self._http.post(self.upstream + request.path, data=body) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            response.set_cookie("route", "backend-1")
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(self, server: Address) -> str:
        self.upstream = f"http://127.0.0.1:{server.port}"
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self._runner.cleanup()


async def test_the_balancers_cookie_comes_back_on_every_later_request(echo_server: Address) -> None:
    sticky = StickyBalancer()
    async with run_pair([echo_server], transport="http", front=sticky.start) as pair:
        async with asyncio.timeout(30):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 4 << 20)
        assert sent == echoed
    await sticky.stop()
    assert sticky.seen[0] is None  # the OPEN: no cookie yet
    later = sticky.seen[1:]
    assert len(later) >= 5
    assert set(later) == {"backend-1"}
