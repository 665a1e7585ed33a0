"""flyway transport ``ws`` (``-w``): the tunnel rides one WebSocket connection.

The client's hello travels in a cookie of the upgrade request, so the server
checks it before upgrading: a request without a valid hello is never upgraded
and gets the fallback's answer, like any other visitor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from flyway_core import (
    CarrierClosed,
    DialError,
    ServerURL,
    Settings,
    TunnelRefused,
    describe_error,
    hookimpl,
    map_errors,
)
from flyway_core.interfaces import Carrier, FrontDoor, Transport
from flyway_core.tls import client_ssl

__all__ = ["WebSocketCarrier", "WebSocketTransport", "frame_writer"]

COOKIE = "sid"
MAX_MESSAGE = 1 << 20  # bytes per WebSocket message; larger sends are split
CLOSE_TIMEOUT = 1.0  # seconds to wait for the peer's close frame: a dead path must not hang us
HIGH_WATER = 1 << 20  # unsent bytes in the socket beyond which send_nowait leaves it to send()


@hookimpl
def register_transports(settings: Settings) -> list[WebSocketTransport]:
    return [WebSocketTransport()]


def _encode(hello: bytes) -> str:
    return base64.urlsafe_b64encode(hello).rstrip(b"=").decode()


def _decode(token: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None


def frame_writer(ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> Any:
    """aiohttp's frame writer behind ``ws``, if it has the synchronous method we call.

    ``send_bytes`` is a coroutine only so that it can wait for a full socket; the
    writer below it frames and writes at once. Calling that directly saves a task
    switch per message, most of a small message's cost. It is not public API, so
    it is looked up here, once, and the carrier keeps to ``send_bytes`` without it.
    """
    writer = getattr(ws, "_writer", None)
    return writer if callable(getattr(writer, "_write_websocket_frame", None)) else None


class WebSocketCarrier(Carrier):
    """A carrier over an aiohttp WebSocket (client or server side)."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._ws = ws
        self._session = session
        self._frames = frame_writer(ws)

    def send_nowait(self, data: bytes) -> bool:
        """Write ``data`` as one binary message now, unless the socket is backed up."""
        frames = self._frames
        if frames is None or self._ws.closed or len(data) > MAX_MESSAGE:
            return False
        transport = frames.transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > HIGH_WATER
        ):
            return False
        try:
            frames._write_websocket_frame(data, aiohttp.WSMsgType.BINARY, 0)
        except (ConnectionError, aiohttp.ClientError):
            return False
        return True

    async def send(self, data: bytes) -> None:
        if self._ws.closed:
            raise CarrierClosed("the WebSocket is closed")
        with map_errors({ConnectionError: CarrierClosed, aiohttp.ClientError: CarrierClosed}):
            for start in range(0, len(data), MAX_MESSAGE):
                await self._ws.send_bytes(data[start : start + MAX_MESSAGE])

    async def receive(self) -> bytes:
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                return data
            if message.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            return b""  # CLOSE, CLOSING, CLOSED, ERROR, or TEXT (not ours): the pipe is done

    async def close(self) -> None:
        try:
            await self._ws.close()
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            if self._session is not None:
                await self._session.close()


class WebSocketTransport(Transport):
    """Dials ``ws(s)://server/path`` with the hello in a cookie; serves upgrades that carry one."""

    name = "ws"
    flag = "-w"

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> WebSocketCarrier:
        url = server.url().replace("http", "ws", 1)
        ssl_context = client_ssl(settings) if server.scheme == "https" else True
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        try:
            ws = await session.ws_connect(
                url,
                headers={"Cookie": f"{COOKIE}={_encode(hello)}"},
                max_msg_size=2 * MAX_MESSAGE,
                autoping=True,
                ssl=ssl_context,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            )
        except aiohttp.WSServerHandshakeError as exc:
            await session.close()
            raise TunnelRefused(str(server), f"HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise DialError(f"cannot reach {server}: {describe_error(exc).lower()}") from None
        except BaseException:
            await session.close()
            raise
        return WebSocketCarrier(ws, session)

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def serving() -> AsyncIterator[None]:
            door.add_handler(lambda request: self._handle(request, door))
            yield

        return serving()

    async def _handle(self, request: web.Request, door: FrontDoor) -> web.StreamResponse | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        token = request.cookies.get(COOKIE)
        hello = _decode(token) if token else None
        if hello is None:
            return None
        peer = request.remote or "?"
        connection = door.accept(hello, peer)
        if connection is None:
            return None
        ws = web.WebSocketResponse(
            max_msg_size=2 * MAX_MESSAGE, compress=False, autoping=True, timeout=CLOSE_TIMEOUT
        )
        await ws.prepare(request)
        await door.run_session(WebSocketCarrier(ws), connection, peer=peer, transport=self.name)
        return ws
