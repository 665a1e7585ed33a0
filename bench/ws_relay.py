#!/usr/bin/env python3
"""A bare WebSocket relay: the floor under flyway's ``ws`` transport, for bench/run.py.

    python bench/ws_relay.py server LPORT:HOST:HPORT [...]   WebSocket on LPORT -> TCP HOST:HPORT
    python bench/ws_relay.py client LPORT:HOST:HPORT [...]   TCP on LPORT -> WebSocket HOST:HPORT

Each TCP connection rides a WebSocket connection of its own, as binary messages,
with aiohttp on both sides and uvloop when it is installed: no crypto, no
multiplexing, no flow control of its own. It writes frames the way flyway's
``ws`` carrier does (aiohttp's frame writer, called from the socket's
``data_received``) and receives them the way it does (``await ws.receive()``), so
what flyway costs over this column is flyway's own work: its protocol, crypto and
streams. Only latency metrics run on it. It writes nothing unless it fails.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

Socket = Any  # aiohttp's WebSocket on either side (client or server response)
CLOSING: set[asyncio.Task[Any]] = set()  # WebSocket closes under way, kept referenced


class Local(asyncio.Protocol):
    """The TCP side of one relayed connection; bytes go out as WebSocket messages."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.ws: Socket = None
        self.pending: list[bytes] = []  # arrived before the WebSocket was up
        self.closing = False
        self.local_done = False  # the TCP side sent its EOF or went away

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.ws is None:
            self.pending.append(data)
        else:
            self.ws._writer._write_websocket_frame(data, aiohttp.WSMsgType.BINARY, 0)

    def eof_received(self) -> bool:
        self.local_done = True
        self._close_ws()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.local_done = True
        self._close_ws()

    def _close_ws(self) -> None:
        if self.ws is not None and not self.ws.closed and not self.closing:
            self.closing = True
            task = asyncio.get_running_loop().create_task(self.ws.close())
            CLOSING.add(task)
            task.add_done_callback(CLOSING.discard)

    async def pump(self, ws: Socket) -> None:
        """Relay until either side closes: what was held first, then messages as they come."""
        self.ws = ws
        for data in self.pending:
            self.data_received(data)
        self.pending.clear()
        if self.local_done:  # the TCP side finished before the WebSocket was up
            self._close_ws()
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY or self.transport is None:
                    break
                self.transport.write(message.data)
        finally:
            if self.transport is not None:
                self.transport.close()


async def serve(lport: int, host: str, hport: int) -> web.AppRunner:
    """WebSocket on 127.0.0.1:lport; each connection is relayed to TCP host:hport."""
    loop = asyncio.get_running_loop()

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        try:
            _, local = await loop.create_connection(Local, host, hport)
        except OSError:
            await ws.close()
            return ws
        await local.pump(ws)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", lport).start()
    return runner


async def forward(
    lport: int, host: str, hport: int, session: aiohttp.ClientSession
) -> asyncio.Server:
    """TCP on 127.0.0.1:lport; each connection gets a WebSocket to ws://host:hport/."""
    loop = asyncio.get_running_loop()
    pumps: set[asyncio.Task[None]] = set()

    async def connect(local: Local) -> None:
        try:
            ws = await session.ws_connect(f"http://{host}:{hport}/", compress=0)
        except (OSError, aiohttp.ClientError):
            if local.transport is not None:
                local.transport.abort()
            return
        async with ws:
            await local.pump(ws)

    def accepted() -> Local:
        local = Local()
        task = loop.create_task(connect(local))
        pumps.add(task)
        task.add_done_callback(pumps.discard)
        return local

    return await loop.create_server(accepted, "127.0.0.1", lport)


async def main(side: str, rules: list[tuple[int, str, int]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        if side == "server":
            runners = [await serve(*rule) for rule in rules]
            await stop.wait()
            for runner in runners:
                await runner.cleanup()
        else:
            servers = [await forward(*rule, session) for rule in rules]
            await stop.wait()
            for server in servers:
                server.close()


def parse(spec: str) -> tuple[int, str, int]:
    lport, host, hport = spec.split(":")
    return int(lport), host, int(hport)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("server", "client"):
        sys.exit(__doc__)
    rules = [parse(spec) for spec in sys.argv[2:]]
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(main(sys.argv[1], rules))
    else:
        uvloop.run(main(sys.argv[1], rules))
