"""Built-in plugin: report events on the terminal with rich, one tidy line each.

Verbosity: ``-q`` errors only; default adds sessions and failures; ``-v`` adds a
line per connection; ``-vv`` adds a live traffic line at the bottom, and a line
per request that was not tunnel traffic. Below ``-vv`` those are counted and
summed up in one line a minute at most (``SUMMARY_INTERVAL``), so nobody without
the password can flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    NotTunnelTraffic,
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

__all__ = ["SUMMARY_INTERVAL", "ConsoleReporter", "human_bytes"]

SUMMARY_INTERVAL = 60.0  # seconds between two summaries of requests that were not tunnel traffic


def human_bytes(n: float) -> str:
    """Format a byte count the way people read it (``1.5 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ConsoleReporter:
    """Prints events to stderr; one instance per plugin manager."""

    def __init__(
        self, console: Console | None = None, *, summary_interval: float = SUMMARY_INTERVAL
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbosity = 0
        self.summary_interval = summary_interval
        self._live: Live | None = None
        self._last: tuple[float, int, int] | None = None
        self._not_tunnel = 0  # requests that were not tunnel traffic, since the last summary
        self._rejected = 0  # of which tried to open a tunnel (a bad hello)

    @hookimpl
    def lifespan(self, settings: Settings) -> AsyncIterator[None] | None:
        self.verbosity = settings.verbosity
        return self._running()  # type: ignore[return-value]

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        """The live traffic line at ``-vv``; below it, the summary once an interval."""
        if self.verbosity >= 2:
            with Live(Text(""), console=self.console, refresh_per_second=2, transient=True) as live:
                self._live = live
                try:
                    yield
                finally:
                    self._live = None
            return
        async with asyncio.TaskGroup() as tasks:
            summaries = tasks.create_task(self._summaries())
            try:
                yield
            finally:
                summaries.cancel()
                self.summarise()

    async def _summaries(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.summary_interval)
                self.summarise()

    def summarise(self) -> None:
        """Print one line for the requests counted since the last one, if any."""
        count, rejected = self._not_tunnel, self._rejected
        self._not_tunnel = self._rejected = 0
        if not (count or rejected) or self.verbosity < 0:
            return
        count = max(count, rejected)
        what = "request was" if count == 1 else "requests were"
        hellos = f", {rejected} with a bad hello" if rejected else ""
        self._line("yellow", f"{count} {what} not tunnel traffic{hellos} (-vv: each one)")

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
            case TunnelRejected(peer, reason):
                self._rejected += 1
                if self.verbosity >= 2:
                    self._line("yellow", f"turned away {peer}: {reason}")
            case NotTunnelTraffic(peer, reason):
                self._not_tunnel += 1
                if self.verbosity >= 2:
                    self._line("dim", f"not tunnel traffic from {peer}: {reason}")
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
