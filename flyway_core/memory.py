"""An in-memory carrier and transport: a client and a server joined inside one process.

Used by the ``tunnel`` pytest fixture and by anyone testing a listener or
dialer plugin without a network.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

from flyway_core.errors import CarrierClosed, TunnelRefused
from flyway_core.interfaces import Carrier, Transport

if TYPE_CHECKING:
    from flyway_core.address import ServerURL
    from flyway_core.interfaces import FrontDoor
    from flyway_core.settings import Settings

__all__ = ["MemoryCarrier", "MemoryTransport", "memory_pipe"]


class MemoryCarrier(Carrier):
    """One end of an in-memory pipe."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise CarrierClosed("memory carrier closed")
        self._outbox.put_nowait(data)

    async def receive(self) -> bytes:
        if self._closed:
            return b""
        return await self._inbox.get()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(b"")
            self._inbox.put_nowait(b"")


def memory_pipe() -> tuple[MemoryCarrier, MemoryCarrier]:
    """Return two carriers joined to each other."""
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    return MemoryCarrier(a, b), MemoryCarrier(b, a)


class MemoryTransport(Transport):
    """A transport whose ``dial`` reaches a front door in the same process."""

    name = "memory"

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self._tasks: set[asyncio.Task[None]] = set()

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> MemoryCarrier:
        connection = self.door.accept(hello, "memory")
        if connection is None:
            raise TunnelRefused(str(server))
        client_end, server_end = memory_pipe()
        task = asyncio.get_running_loop().create_task(
            self.door.run_session(server_end, connection, peer="memory", transport=self.name)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client_end

    def serve(self, door: FrontDoor) -> AbstractAsyncContextManager[None]:
        return nullcontext()
