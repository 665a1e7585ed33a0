"""``--auto``: a transport that dials WebSocket when it passes the path, else HTTP POST."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flyway_core import CarrierError, FlywayError, ServerURL, Settings, TunnelRefused
from flyway_http_post.transport import HttpPostTransport

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from flyway_core.interfaces import Carrier, FrontDoor, Transport

__all__ = ["AutoTransport"]

log = logging.getLogger(__name__)

AUTO_WS_SECONDS = 5.0  # how long a WebSocket dial may take before HTTP POST is used
AUTO_RECHECK_SECONDS = 300.0  # after WebSocket failed, dial HTTP POST this long


def _installed_websocket(settings: Settings) -> Transport | None:
    """The installed ``ws`` transport, found as the core finds transports (blocking honoured)."""
    from flyway_core.plugins import Plugins, make_plugin_manager

    try:
        return Plugins(make_plugin_manager()).transports(settings).get("ws")
    except FlywayError as exc:
        log.warning("auto: cannot look up the WebSocket transport: %s", exc)
        return None


class AutoTransport:
    """``--auto``: WebSocket when it passes the path, else HTTP POST; re-checked now and then.

    Each dial tries WebSocket first (briefly) and falls back to HTTP POST on any
    failure: a refusal cannot tell a wrong password from a path that blocks
    upgrades, so HTTP POST's own answer decides. After WebSocket failed, dials
    go straight to HTTP POST for ``AUTO_RECHECK_SECONDS``; that also heals the
    rare path that let the server see the hello and then broke the upgrade (the
    hello is then spent, and the next dial brings a fresh one).

    The core reads ``keepalive`` just before each dial to build the session
    (``flyway_core/client.py``, ``_connect``). It is True whenever the dial may
    end on WebSocket, which needs keepalives, and False once HTTP POST is
    decided on, so an idle tunnel stays quiet; HTTP POST with keepalives (the
    first dial after WebSocket failed) is only chattier, never wrong.
    """

    name = "auto"
    flag: str | None = "--auto"
    client_only = True  # it only chooses; the server serves the transports it chooses from

    def __init__(
        self,
        http: HttpPostTransport,
        find_websocket: Callable[[Settings], Transport | None] = _installed_websocket,
    ) -> None:
        self.http = http
        self.chosen: Transport | None = None  # what the last successful dial used
        self._find_websocket = find_websocket
        self._websocket: Transport | None = None
        self._looked_up = False
        self._ws_again_at = 0.0  # monotonic time from which WebSocket is tried again
        self._planned: bool | None = None

    @property
    def keepalive(self) -> bool:
        self._planned = time.monotonic() >= self._ws_again_at
        return self._planned

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> Carrier:
        try_ws = self._planned if self._planned is not None else self.keepalive
        self._planned = None
        why, warn = "WebSocket is not tried again yet", False
        if try_ws:
            if not self._looked_up:
                self._websocket, self._looked_up = self._find_websocket(settings), True
            if self._websocket is None:
                self._ws_again_at = math.inf
                why = "the WebSocket transport is not installed"
            else:
                try:
                    async with asyncio.timeout(AUTO_WS_SECONDS):
                        carrier = await self._websocket.dial(server, hello, settings)
                except TimeoutError:
                    why = f"WebSocket did not answer in {AUTO_WS_SECONDS:g} s"
                except (CarrierError, OSError) as exc:
                    detail = str(exc)
                    if isinstance(exc, TunnelRefused):
                        detail = "refused, " + detail.rpartition("; ")[2]
                    why = f"WebSocket did not pass ({detail})"
                else:
                    self._choose(self._websocket, "WebSocket passes")
                    return carrier
                self._ws_again_at = time.monotonic() + AUTO_RECHECK_SECONDS
                warn = True
        carrier = await self.http.dial(server, hello, settings)
        self._choose(self.http, why, warn=warn)
        return carrier

    def _choose(self, transport: Transport, why: str, *, warn: bool = False) -> None:
        if transport is not self.chosen:
            name = "WebSocket" if transport is self._websocket else "HTTP POST"
            log.log(logging.WARNING if warn else logging.INFO, "auto: %s; using %s", why, name)
        self.chosen = transport

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        """Serve nothing of its own: the server serves ``http`` and ``ws`` themselves."""
        return contextlib.nullcontext()
