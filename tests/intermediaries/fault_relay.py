"""FaultRelay: a TCP relay in front of an HTTP/1.1 port that resets every Nth body halfway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from intermediaries.framing import Direction, Exchange, Framer

__all__ = ["BodyRecord", "FaultRelay"]


@dataclass(frozen=True)
class BodyRecord:
    """One non-empty body in the faulted direction, numbered from 1 across connections."""

    index: int
    connection: int  # numbered from 1 in the order the relay accepted them
    length: int | None  # its Content-Length; None when chunked or until close
    cut: bool


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Connection:
    number: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


class FaultRelay:
    """A TCP relay for HTTP/1.1 that resets the connection mid-body every ``every``th body.

    Bodies are counted in ``direction`` ("request" or "response") across all relayed
    connections, from 1; only non-empty ones count. Body number ``every``, ``2*every``…
    is forwarded up to about its middle (Content-Length: half of it; chunked: the size
    line and half of the first chunk; until-close: half of the first read), then both
    sides of that connection are reset (RST). Everything else, including keep-alive
    connections carrying several messages, passes byte for byte. ``every=0`` never cuts.
    With ``larger_than``, every body whose Content-Length exceeds it is cut instead, as a
    proxy that refuses large bodies by resetting the connection does.
    """

    def __init__(
        self,
        target_port: int,
        *,
        direction: Direction = "response",
        every: int = 2,
        target_host: str = "127.0.0.1",
        larger_than: int | None = None,
    ) -> None:
        if direction not in ("request", "response"):
            raise ValueError(f"direction must be 'request' or 'response', not {direction!r}")
        if every < 0:
            raise ValueError("every must be >= 0")
        self.target = (target_host, target_port)
        self.direction: Direction = direction
        self.every = every
        self.larger_than = larger_than
        self.port = 0
        self.records: list[BodyRecord] = []
        self.connections = 0  # connections accepted so far
        self._server: asyncio.Server | None = None
        self._live: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resets(self) -> int:
        return sum(record.cut for record in self.records)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._live.values()):
            connection.reset()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> FaultRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _choose(self, connection: int, length: int | None) -> bool:
        index = len(self.records) + 1
        if self.larger_than is not None:
            cut = length is not None and length > self.larger_than
        else:
            cut = self.every > 0 and index % self.every == 0
        self.records.append(BodyRecord(index, connection, length, cut))
        return cut

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            try:
                async with asyncio.timeout(5.0):
                    up_reader, up_writer = await asyncio.open_connection(*self.target)
            except (OSError, TimeoutError):
                _reset(writer)
                return
            connection = _Connection(number, writer, up_writer)
            self._live[number] = connection
            exchange = Exchange()
            framers = {
                role: Framer(role, exchange, self._chooser(role, number))
                for role in ("request", "response")
            }
            await asyncio.gather(
                self._pump(reader, up_writer, framers["request"], connection),
                self._pump(up_reader, writer, framers["response"], connection),
            )
            writer.close()
            up_writer.close()
        finally:
            self._live.pop(number, None)
            self._tasks.discard(task)

    def _chooser(self, role: Direction, connection: int) -> Callable[[int | None], bool]:
        if role != self.direction:
            return lambda length: False
        return functools.partial(self._choose, connection)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        framer: Framer,
        connection: _Connection,
    ) -> None:
        sink.transport.set_write_buffer_limits(high=0)  # drain() waits for the kernel
        try:
            while data := await source.read(1 << 16):
                count, cut = framer.feed(data)
                if count:
                    sink.write(data[:count])
                    await sink.drain()
                if cut:
                    connection.reset()
                    return
            if sink.can_write_eof() and not sink.transport.is_closing():
                sink.write_eof()
        except (ConnectionError, OSError):
            connection.reset()  # a reset on one side resets the other
