"""RecordingRelay: an HTTP reverse proxy that keeps every request it passes, for replays.

It forwards each request to one origin (streaming the answer back as it comes, so
streamed responses stay streamed), and records the request's method, path,
headers and whole body. A test can replay what it recorded from outside, as an
attacker on the path would, or have the relay swallow one answer: read it from the
origin to the end, then send the client nothing, as a path that loses a response
whole would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from flyway_core import Address

__all__ = ["RecordedRequest", "RecordingRelay"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingRelay:
    """``await relay.start(origin)`` returns its URL; ``relay.recorded`` fills up."""

    def __init__(self) -> None:
        self.recorded: list[RecordedRequest] = []
        self.swallow: Callable[[RecordedRequest], bool] | None = None  # lose this answer
        self.swallowed = 0
        self.origin = ""
        self.url = ""  # the relay's own, once started
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, origin: Address | int) -> str:
        """Relay to the origin's port on 127.0.0.1; return the relay's URL."""
        port = origin if isinstance(origin, int) else origin.port
        self.origin = f"http://127.0.0.1:{port}"
        jar = aiohttp.DummyCookieJar()
        self._http = aiohttp.ClientSession(auto_decompress=False, cookie_jar=jar)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"
        return self.url

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        recorded = RecordedRequest(request.method, request.path_qs, headers, body)
        self.recorded.append(recorded)
        swallow = self.swallow is not None and self.swallow(recorded)
        if swallow:
            self.swallow = None
            self.swallowed += 1
        async with self._http.request(
            request.method,
            self.origin + request.path_qs,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as upstream:
            if swallow:
                await upstream.read()  # the origin has sent it all; the client gets nothing
                await asyncio.sleep(3600)
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers[key] = value
            with contextlib.suppress(ConnectionError):  # the client went away meanwhile
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response
