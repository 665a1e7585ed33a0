"""The far ends of every measured connection: asyncio servers on 127.0.0.1:0 in the driver."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from .wire import HEADER, HOST, KiB, MiB, pattern, pattern_hash

__all__ = ["TargetServers"]


class TargetServers:
    """The far ends of every connection: asyncio servers on 127.0.0.1:0 in this process.

    echo    echoes everything; on EOF it half-closes back and closes.
    sink    header, then data until EOF; replies the 64-hex sha256 of the data and closes.
    source  header (length N, seed); sends pattern(N, seed), then its 64-hex sha256, closes.
    duplex  header (length N, seed); sends pattern(N, seed) while hashing what it receives
            until EOF; then replies sha256(received) + sha256(sent) (128 hex) and closes.
    idle    accepts and holds the connection until the peer closes it.
    """

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.idle_open = 0
        self.eof_at: dict[int, float] = {}  # tag -> when the upload's EOF reached the target
        self.errors: list[str] = []
        self._servers: list[asyncio.Server] = []
        self._idle_changed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on one port per target (``self.ports``)."""
        handlers = {
            "echo": self._echo,
            "sink": self._sink,
            "source": self._source,
            "duplex": self._duplex,
            "idle": self._idle,
        }
        for name, handler in handlers.items():
            server = await asyncio.start_server(
                self._guard(name, handler), HOST, 0, limit=4 * MiB, backlog=4096
            )
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Abort the connections still open and stop listening."""
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._servers:
            server.close()

    async def wait_idle(self, want: Callable[[int], bool], seconds: float) -> None:
        """Wait until ``want(idle connections open)`` holds; TimeoutError after ``seconds``."""
        async with asyncio.timeout(seconds):
            while not want(self.idle_open):
                self._idle_changed.clear()
                await self._idle_changed.wait()

    def _guard(
        self,
        name: str,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            writer.transport.set_write_buffer_limits(high=4 * MiB)
            try:
                async with asyncio.timeout(300):
                    await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # readiness probes and aborted transfers; the client side reports those
            except Exception as exc:
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                self._writers.discard(writer)
                writer.close()

        return run

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(256 * KiB):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, tag = HEADER.unpack(await reader.readexactly(HEADER.size))
        digest = hashlib.sha256()
        while data := await reader.read(MiB):
            digest.update(data)
        self.eof_at[tag] = time.perf_counter()
        writer.write(digest.hexdigest().encode())
        await writer.drain()

    async def _source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nbytes, seed, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
        for chunk in pattern(nbytes, seed):
            writer.write(chunk)
            await writer.drain()
        writer.write(pattern_hash(nbytes, seed).encode())
        await writer.drain()

    async def _duplex(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nbytes, seed, tag = HEADER.unpack(await reader.readexactly(HEADER.size))

        async def send() -> None:
            for chunk in pattern(nbytes, seed):
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            digest = hashlib.sha256()
            while data := await reader.read(MiB):
                digest.update(data)
            self.eof_at[tag] = time.perf_counter()
            await sender
        finally:
            sender.cancel()
        writer.write(digest.hexdigest().encode() + pattern_hash(nbytes, seed).encode())
        await writer.drain()

    async def _idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle_open += 1
        self._idle_changed.set()
        try:
            while await reader.read(4096):
                pass
        finally:
            self.idle_open -= 1
            self._idle_changed.set()
