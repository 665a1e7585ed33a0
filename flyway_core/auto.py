"""``--auto``: a transport that dials WebSocket when it passes the path, else HTTP POST.

It is the core's own, composed of the installed ``ws`` and ``http`` transports
(``Plugins.transport("auto")``), so a disabled plugin is simply not among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING

from flyway_core.errors import CarrierError, TunnelRefused
from flyway_core.interfaces import Transport

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from flyway_core.address import ServerURL
    from flyway_core.interfaces import Carrier, FrontDoor
    from flyway_core.settings import Settings

__all__ = ["AUTO_RECHECK_SECONDS", "AUTO_WS_SECONDS", "AutoTransport"]

log = logging.getLogger(__name__)

AUTO_WS_SECONDS = 5.0  # how long a WebSocket dial may take before HTTP POST is used
AUTO_RECHECK_SECONDS = 300.0  # after WebSocket failed, dial HTTP POST this long


class AutoTransport(Transport):
    """``--auto``: WebSocket when it passes the path, else HTTP POST; re-checked now and then.

    Each dial tries WebSocket first (briefly) and falls back to HTTP POST on any
    failure: a refusal cannot tell a wrong password from a path that blocks
    upgrades, so HTTP POST's own answer decides. After WebSocket failed, dials
    go straight to HTTP POST for ``AUTO_RECHECK_SECONDS``; that also heals the
    rare path that let the server see the hello and then broke the upgrade (the
    hello is then spent, and the next dial brings a fresh one). Whether the
    session keeps itself alive follows from the carrier the dial returned.
    """

    name = "auto"
    flag = "--auto"
    client_only = True  # it only chooses; the server serves the transports it chooses from

    def __init__(self, websocket: Transport | None, http: Transport) -> None:
        self.websocket = websocket
        self.http = http
        self.chosen: Transport | None = None  # what the last successful dial used
        self._ws_again_at = 0.0 if websocket is not None else math.inf

    def carried_by(self) -> str:
        return f"{self.chosen.name} (auto)" if self.chosen is not None else self.name

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> Carrier:
        why, warn = "WebSocket is not tried again yet", False
        if self.websocket is None:
            why = "the WebSocket transport is not installed"
        elif time.monotonic() >= self._ws_again_at:
            try:
                async with asyncio.timeout(AUTO_WS_SECONDS):
                    carrier = await self.websocket.dial(server, hello, settings)
            except TimeoutError:
                why = f"WebSocket did not answer in {AUTO_WS_SECONDS:g} s"
            except (CarrierError, OSError) as exc:
                detail = str(exc)
                if isinstance(exc, TunnelRefused):
                    detail = "refused, " + detail.rpartition("; ")[2]
                why = f"WebSocket did not pass ({detail})"
            else:
                self._choose(self.websocket, "WebSocket passes")
                return carrier
            self._ws_again_at = time.monotonic() + AUTO_RECHECK_SECONDS
            warn = True
        carrier = await self.http.dial(server, hello, settings)
        self._choose(self.http, why, warn=warn)
        return carrier

    def _choose(self, transport: Transport, why: str, *, warn: bool = False) -> None:
        if transport is not self.chosen:
            name = "WebSocket" if transport is self.websocket else "HTTP POST"
            log.log(logging.WARNING if warn else logging.INFO, "auto: %s; using %s", why, name)
        self.chosen = transport

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        """Serve nothing of its own: the server serves ``http`` and ``ws`` themselves."""
        return contextlib.nullcontext()
