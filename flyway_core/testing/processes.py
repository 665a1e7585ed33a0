"""Real ``flyway`` processes for tests, started as users start them and always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from flyway_core.testing.ports import wait_port

__all__ = ["FLYWAY", "StartFlyway", "flyway_processes"]

FLYWAY = [sys.executable, "-m", "flyway_core"]
StartFlyway = Callable[..., Awaitable[asyncio.subprocess.Process]]


@contextlib.asynccontextmanager
async def flyway_processes(env: dict[str, str] | None = None) -> AsyncIterator[StartFlyway]:
    """Yield ``start(*args, env=None, port=None)``, which runs ``flyway ARGS``.

    ``env`` (here and per process) is added to the environment; ``port`` is waited
    for until the process listens on it. Every process is stopped at the end, the
    last started first: SIGTERM, then a kill after 5 s. Their stderr is discarded.
    """
    procs: list[asyncio.subprocess.Process] = []
    base = {**os.environ, "COLUMNS": "200", **(env or {})}

    async def start(
        *args: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *FLYWAY, *args, env={**base, **(env or {})}, stderr=asyncio.subprocess.DEVNULL
        )
        procs.append(proc)
        if port is not None:
            await asyncio.to_thread(wait_port, port)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
