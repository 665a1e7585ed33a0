#!/usr/bin/env python3
"""A bare TCP relay: the floor under flyway's latency, for bench/run.py's "bare relay" column.

    python bench/bare_relay.py [--streams] [--asyncio] LPORT:HOST:HPORT [LPORT:HOST:HPORT ...]

Each accepted connection on 127.0.0.1:LPORT is connected to HOST:HPORT and bytes are
copied both ways as they come: no crypto, no framing, no multiplexing, half-closes
passed on. The bench chains two of these processes (client relay -> server relay ->
target), so the path has the same two extra processes and the same loopback hops as
flyway's client and server, and what it costs over direct is what any two-process
Python relay costs on this machine. It uses asyncio protocols and uvloop when it is
installed, as flyway does; ``--streams`` relays with StreamReader/StreamWriter (one task
per direction) instead, ``--asyncio`` keeps uvloop out. It writes nothing unless it fails.
"""

from __future__ import annotations

import asyncio
import signal
import sys


class Half(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side's Half."""

    def __init__(self, peer: Half | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # what arrived before the other side connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            pass_eof(self, peer)
        return True  # keep our own sending side open until the peer is done too

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if exc is None:
                peer.transport.close()
            else:
                peer.transport.abort()

    # Backpressure: when one side's send buffer is full, stop reading the other side.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def pass_eof(source: Half, sink: Half) -> None:
    """``source`` got EOF: half-close ``sink``; once both sides got one, close both."""
    assert sink.transport is not None
    if not sink.transport.is_closing():
        sink.transport.write_eof()
    if sink.eof:
        for half in (source, sink):
            if half.transport is not None:
                half.transport.close()


def accept(host: str, port: int) -> Half:
    inbound = Half()

    async def dial() -> None:
        loop = asyncio.get_running_loop()
        try:
            _, outbound = await loop.create_connection(lambda: Half(inbound), host, port)
        except OSError:
            if inbound.transport is not None:
                inbound.transport.abort()
            return
        inbound.peer = outbound
        assert outbound.transport is not None
        for data in inbound.pending:
            outbound.transport.write(data)
        inbound.pending.clear()
        if inbound.eof:
            pass_eof(inbound, outbound)
        if inbound.transport is None or inbound.transport.is_closing():
            outbound.transport.close()

    task = asyncio.get_running_loop().create_task(dial())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return inbound


_tasks: set[asyncio.Task[None]] = set()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


async def serve_streams(
    host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The --streams relay: the StreamReader/StreamWriter way, one task per direction."""
    task = asyncio.current_task()
    assert task is not None
    _tasks.add(task)
    try:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        writer.close()
        up_writer.close()
    finally:
        _tasks.discard(task)


async def main(rules: list[str], streams: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    for rule in rules:
        lport, host, hport = rule.rsplit(":", 2)
        if streams:
            server = await asyncio.start_server(
                lambda r, w, h=host, p=int(hport): serve_streams(h, p, r, w),
                "127.0.0.1",
                int(lport),
                backlog=4096,
            )
        else:
            server = await loop.create_server(
                lambda h=host, p=int(hport): accept(h, p),  # type: ignore[misc]
                "127.0.0.1",
                int(lport),
                backlog=4096,
            )
        servers.append(server)
    await stop.wait()
    for server in servers:
        server.close()
    for task in list(_tasks):  # quietly: no "Task was destroyed but it is pending!"
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    streams = "--streams" in args
    plain = "--asyncio" in args
    rules = [a for a in args if not a.startswith("--")]
    if not rules:
        sys.exit(__doc__)
    try:
        if plain:
            raise ImportError("--asyncio")
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(main(rules, streams))
    else:
        uvloop.run(main(rules, streams))
