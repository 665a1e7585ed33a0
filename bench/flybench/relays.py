"""The reference columns: two plain relay processes in flyway's place, to show the floor.

``BareRelay`` chains two bench/bare_relay.py processes; ``BareWebSocketRelay`` two
bench/ws_relay.py processes (aiohttp WebSocket, nothing of flyway's). Only the latency
metrics run on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from . import ROOT
from .processes import Tunnel, first_line, free_ports
from .wire import HOST, TARGETS

__all__ = ["BARE", "BARE_MODES", "BARE_WS", "BareRelay", "BareWebSocketRelay"]

BARE = "bare relay"
BARE_WS = "bare ws relay"  # bench/ws_relay.py: aiohttp WebSocket, nothing of flyway's
# bench/bare_relay.py variants: MODE -> its flags (protocols + uvloop is the floor)
BARE_MODES: dict[str, list[str]] = {
    "protocols": [],
    "streams": ["--streams"],
    "protocols/asyncio": ["--asyncio"],
    "streams/asyncio": ["--streams", "--asyncio"],
}


@dataclass
class BareRelay(Tunnel):
    """The reference: two bench/bare_relay.py processes chained, client -> server -> target.

    No crypto, no framing, no multiplexing; the same two extra processes and loopback
    hops as a tunnel. Only the latency metrics run on it.
    """

    header: ClassVar[str] = "{} (reference)"
    metrics: ClassVar[tuple[str, ...] | None] = ("rtt", "connect")
    relay_flags: list[str] = field(default_factory=list)  # a BARE_MODES value

    def scripts(self) -> tuple[list[str], list[str]]:
        """The server's and the client's command line, before their forwarding rules."""
        script = [str(ROOT / "bench" / "bare_relay.py"), *self.relay_flags]
        return script, script

    async def start(self, target_ports: dict[str, int]) -> bool:
        server_script, client_script = self.scripts()
        ports = free_ports(2 * len(TARGETS))
        middle, local = ports[: len(TARGETS)], ports[len(TARGETS) :]
        self.server = self._popen(
            [
                self.python,
                *server_script,
                *(f"{m}:{HOST}:{target_ports[n]}" for n, m in zip(TARGETS, middle, strict=True)),
            ],
            self.server_log,
        )
        if not await self._listening(self.server, middle, 20):
            self.skipped = f"server relay did not start: {first_line(self.server_log)}"
            return False
        self.forwards = dict(zip(TARGETS, local, strict=True))
        self.client = self._popen(
            [
                self.python,
                *client_script,
                *(f"{lp}:{HOST}:{m}" for lp, m in zip(local, middle, strict=True)),
            ],
            self.client_log,
        )
        return await self._started(local)


@dataclass
class BareWebSocketRelay(BareRelay):
    """The reference under ``ws``: bench/ws_relay.py, one aiohttp WebSocket per connection.

    Frames are written and received as flyway's ``ws`` carrier does, with no crypto,
    multiplexing or flow control, so flyway's cost over this column is its own.
    """

    def scripts(self) -> tuple[list[str], list[str]]:
        script = str(ROOT / "bench" / "ws_relay.py")
        return [script, "server"], [script, "client"]
