"""The runtime's traffic reports: once a second while something moves, silent when idle."""

from __future__ import annotations

import asyncio

import pytest

from flyway_core import runtime
from flyway_core.events import Event, Traffic
from flyway_core.stats import Stats


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


async def test_traffic_is_reported_only_when_the_totals_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "TRAFFIC_INTERVAL", 0.01)
    stats, recorder = Stats(), _Recorder()
    task = asyncio.create_task(runtime._report_traffic(recorder, stats))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)  # about 20 intervals with nothing moving
    assert recorder.events == [Traffic(0, 0, 0, 0)]
    stats.sent += 100
    await asyncio.sleep(0.1)
    task.cancel()
    assert recorder.events == [Traffic(0, 0, 0, 0), Traffic(100, 0, 0, 0)]
