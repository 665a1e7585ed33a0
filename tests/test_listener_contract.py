"""A proxy listener written against the public listener contract alone (``interfaces``).

``LineProxy`` reads ``HOST PORT\\n``, opens a stream there, waits for the server's
answer, says ``OK`` or ``ERR <reason>``, and relays the rest of the connection,
bytes that came with the request line included. ``Answering`` uses a stream
without relaying: it writes a request, half-closes, and reads the whole answer
itself, as an HTTP proxy answering an absolute-form GET does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable

import pytest

from flyway_core import Address, StreamResetError, TargetError, take_buffered
from flyway_core.interfaces import Listener, Tunnel
from flyway_core.testing import free_port


class LineProxy:
    """Listens on 127.0.0.1; each connection names its target on its first line."""

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host, port = (await reader.readline()).decode().split()
            async with tunnel.open_stream(Address(host, int(port))) as stream:
                try:
                    await stream.accepted()
                except TargetError as exc:
                    writer.write(f"ERR {exc}\n".encode())
                    writer.close()
                    return
                writer.write(b"OK\n")
                await stream.relay(
                    writer.transport, already_read=take_buffered(reader), at_eof=reader.at_eof()
                )

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            started(Address("127.0.0.1", server.sockets[0].getsockname()[1]))
            await server.serve_forever()


class SlowLineProxy(LineProxy):
    """A LineProxy that waits a little before handing over (the client's FIN or RST lands)."""

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host, port = (await reader.readline()).decode().split()
            await asyncio.sleep(0.2)
            async with tunnel.open_stream(Address(host, int(port))) as stream:
                self.streams.append(stream)
                await stream.relay(
                    writer.transport, already_read=take_buffered(reader), at_eof=reader.at_eof()
                )
                self.relays_ended += 1

        self.streams: list[object] = []
        self.relays_ended = 0
        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            started(Address("127.0.0.1", server.sockets[0].getsockname()[1]))
            await server.serve_forever()


class Answering:
    """Sends one request through a stream and answers the local client itself."""

    def __init__(self, target: Address) -> None:
        self.target = target

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readline()
            async with tunnel.open_stream(self.target) as stream:
                await stream.write(request * 1000)
                stream.end()
                answer = bytearray()
                while data := await stream.read():
                    answer += data
            writer.write(b"%d %s\n" % (len(answer), hashlib.sha256(answer).hexdigest().encode()))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            started(Address("127.0.0.1", server.sockets[0].getsockname()[1]))
            await server.serve_forever()


async def _started(listener: Listener, tunnel: Tunnel) -> tuple[asyncio.Task[None], Address]:
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(listener.serve(tunnel, started=bound.set_result))
    return task, await bound


def test_the_example_listeners_are_listeners() -> None:
    assert isinstance(LineProxy(), Listener)
    assert isinstance(Answering(Address("127.0.0.1", 1)), Listener)


async def test_a_line_proxy_relays_both_ways_bytes_sent_with_the_request_included(
    tunnel: Tunnel, echo_server: Address
) -> None:
    payload = os.urandom(3 << 20)
    async with asyncio.timeout(20):
        task, proxy = await _started(LineProxy(), tunnel)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        # the request line and the first bytes in one write: they reach the proxy together
        writer.write(f"{echo_server.host} {echo_server.port}\n".encode() + payload[:1000])
        assert await reader.readline() == b"OK\n"

        async def send() -> None:
            writer.write(payload[1000:])
            await writer.drain()
            writer.write_eof()

        sending = asyncio.create_task(send())
        echoed = await reader.read(-1)  # to EOF: the echo server half-closes after us
        await sending
        writer.close()
        task.cancel()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_a_line_proxy_reports_what_the_server_could_not_reach(tunnel: Tunnel) -> None:
    async with asyncio.timeout(10):
        task, proxy = await _started(LineProxy(), tunnel)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(f"127.0.0.1 {free_port()}\n".encode())
        assert await reader.read(-1) == b"ERR connection refused\n"
        writer.close()
        task.cancel()


async def test_a_listener_can_read_and_write_a_stream_itself(
    tunnel: Tunnel, echo_server: Address
) -> None:
    async with asyncio.timeout(10):
        task, proxy = await _started(Answering(echo_server), tunnel)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"GET / HTTP/1.0 and then some bytes to make it long enough\n")
        expected = b"GET / HTTP/1.0 and then some bytes to make it long enough\n" * 1000
        line = await reader.readline()
        writer.close()
        task.cancel()
    assert line == b"%d %s\n" % (len(expected), hashlib.sha256(expected).hexdigest().encode())


async def test_reading_a_reset_stream_raises(tunnel: Tunnel) -> None:
    async with asyncio.timeout(10), tunnel.open_stream(Address("127.0.0.1", free_port())) as s:
        with pytest.raises(StreamResetError, match="refused"):
            await s.read()


async def test_a_request_sent_with_its_fin_is_relayed_and_ends(
    tunnel: Tunnel, echo_server: Address
) -> None:
    async with asyncio.timeout(10):
        task, proxy = await _started(SlowLineProxy(), tunnel)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(f"{echo_server.host} {echo_server.port}\n".encode() + b"hello")
        writer.write_eof()  # the FIN arrives before the proxy hands the connection over
        assert await reader.read(-1) == b"hello"  # echoed, then the target's EOF came back
        writer.close()
        task.cancel()


async def test_a_client_that_resets_during_the_handshake_ends_its_relay(
    tunnel: Tunnel, echo_server: Address
) -> None:
    import socket
    import struct

    listener = SlowLineProxy()
    async with asyncio.timeout(10):
        task, proxy = await _started(listener, tunnel)
        _, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(f"{echo_server.host} {echo_server.port}\n".encode())
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST while the proxy still waits
        while listener.relays_ended < 1:
            await asyncio.sleep(0.02)
        task.cancel()
