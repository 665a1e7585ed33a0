"""Built-in plugin: report events on the terminal with rich, one tidy line each.

Verbosity: ``-q`` errors only; default adds sessions and failures; ``-v`` adds a
line per connection; ``-vv`` adds a live traffic line at the bottom.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from flyway_core.events import (
    DialFailed,
    Event,
    Listening,
    SessionDown,
    SessionUp,
    StreamDown,
    StreamUp,
    Traffic,
    TunnelRejected,
)
from flyway_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from flyway_core.settings import Settings

__all__ = ["ConsoleReporter", "human_bytes"]


def human_bytes(n: float) -> str:
    """Format a byte count the way people read it (``1.5 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ConsoleReporter:
    """Prints events to stderr; one instance per plugin manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbosity = 0
        self._live: Live | None = None
        self._last: tuple[float, int, int] | None = None

    @hookimpl
    def lifespan(self, settings: Settings) -> AsyncIterator[None] | None:
        self.verbosity = settings.verbosity
        return self._live_line() if settings.verbosity >= 2 else None  # type: ignore[return-value]

    @asynccontextmanager
    async def _live_line(self) -> AsyncIterator[None]:
        with Live(Text(""), console=self.console, refresh_per_second=2, transient=True) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    @hookimpl
    def on_event(self, event: Event) -> None:
        match event:
            case Traffic():
                self._traffic(event)
            case StreamUp(session, stream_id, target, origin) if self.verbosity >= 1:
                self._line("dim", f"{session}#{stream_id} {origin} → {target}")
            case StreamDown(session, stream_id, target, sent, received, seconds, error):
                if error and self.verbosity >= 0:
                    self._line("yellow", f"{session}#{stream_id} {target}: {error}")
                elif self.verbosity >= 1:
                    self._line(
                        "dim",
                        f"{session}#{stream_id} {target} closed: ↑ {human_bytes(sent)} "
                        f"↓ {human_bytes(received)} in {seconds:.1f}s",
                    )
            case SessionUp(session, peer, transport, role) if self.verbosity >= 0:
                where = "to" if role == "client" else "from"
                self._line("green", f"session {session} up {where} {peer} over {transport}")
            case SessionDown(session, peer, error) if self.verbosity >= 0:
                self._line(
                    "yellow" if error else "dim",
                    f"session {session} ({peer}) ended" + (f": {error}" if error else ""),
                )
            case DialFailed(_, reason, retry_in):
                self._line("red", f"{reason} (retrying in {retry_in:.1f}s)")
            case TunnelRejected(peer, reason) if self.verbosity >= 0:
                self._line("yellow", f"turned away {peer}: {reason} (served the fallback)")
            case Listening(what, address) if self.verbosity >= 1:
                self._line("dim", f"{what} listening on {address}")

    def _line(self, style: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(Text.assemble((stamp + " ", "dim"), (message, style)))

    def _traffic(self, event: Traffic) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        up = down = 0.0
        if self._last is not None:
            then, sent, received = self._last
            elapsed = max(now - then, 1e-6)
            up, down = (event.sent - sent) / elapsed, (event.received - received) / elapsed
        self._last = (now, event.sent, event.received)
        self._live.update(
            Text(
                f"↑ {human_bytes(event.sent)} ({human_bytes(up)}/s)  "
                f"↓ {human_bytes(event.received)} ({human_bytes(down)}/s)  "
                f"{event.streams} streams, {event.sessions} sessions",
                style="cyan",
            )
        )
