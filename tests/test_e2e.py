"""End to end on 127.0.0.1: a server, a client, -L forwards, over each installed carrier."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from flyway_core import Address, Settings
from flyway_core.events import StreamDown
from flyway_core.testing import EchoServer, hashed_exchange, run_pair, wait_for

TRANSPORTS = ["ws", "http"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_bytes_cross_both_ways_at_once_hash_verified(
    echo_server: Address, transport: str
) -> None:
    async with run_pair(transport=transport, targets=[echo_server]) as pair, asyncio.timeout(30):
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 8 << 20)
        assert sent == echoed


async def test_half_close_keeps_the_reply_coming(transport: str) -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's half-close
        writer.write(b"got " + hashlib.sha256(request).hexdigest().encode())
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(answer_after_eof, "127.0.0.1", 0)
    address = Address("127.0.0.1", target.sockets[0].getsockname()[1])
    async with (
        target,
        run_pair(transport=transport, targets=[address]) as pair,
        asyncio.timeout(10),
    ):
        local = pair.local(address)
        reader, writer = await asyncio.open_connection(local.host, local.port)
        body = os.urandom(300_000)
        writer.write(body)
        writer.write_eof()
        reply = await reader.read()
        assert reply == b"got " + hashlib.sha256(body).hexdigest().encode()
        writer.close()


async def test_two_hundred_parallel_connections_all_verified(
    echo_server: Address, transport: str
) -> None:
    async with run_pair(transport=transport, targets=[echo_server]) as pair, asyncio.timeout(60):
        local = pair.local(echo_server)
        results = await asyncio.gather(*(hashed_exchange(local, 64 << 10) for _ in range(200)))
        assert sum(sent == echoed for sent, echoed, *_ in results) == 200


async def test_a_refused_target_closes_the_local_connection_at_once(transport: str) -> None:
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = Address("127.0.0.1", probe.getsockname()[1])  # bound, never listening
        async with run_pair(transport=transport, targets=[dead]) as pair, asyncio.timeout(5):
            local = pair.local(dead)
            reader, writer = await asyncio.open_connection(local.host, local.port)
            started = asyncio.get_running_loop().time()
            assert await reader.read() == b""
            assert asyncio.get_running_loop().time() - started < 1.0
            writer.close()
            await wait_for(lambda: any(isinstance(e, StreamDown) for e in pair.client_events))
            (server_line,) = [e for e in pair.server_events if isinstance(e, StreamDown)]
            (client_line,) = [e for e in pair.client_events if isinstance(e, StreamDown)]
            assert "connection refused" in (server_line.error or "")
            assert "connection refused" in (client_line.error or "")


async def test_a_target_that_stops_reading_holds_at_most_one_window(transport: str) -> None:
    window = 256 << 10
    stalled: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        await asyncio.sleep(3600)

    target = await asyncio.start_server(never_read, "127.0.0.1", 0)
    address = Address("127.0.0.1", target.sockets[0].getsockname()[1])
    settings = Settings(password="pw", window=window)
    async with (
        target,
        run_pair(transport=transport, targets=[address], server_settings=settings) as pair,
        asyncio.timeout(20),
    ):
        local = pair.local(address)
        _, writer = await asyncio.open_connection(local.host, local.port)
        chunk = os.urandom(1 << 16)
        pushed = 0

        async def push() -> None:
            nonlocal pushed
            while True:
                writer.write(chunk)
                await writer.drain()
                pushed += len(chunk)

        pusher = asyncio.create_task(push())
        await asyncio.sleep(2.0)  # long enough to fill every buffer on the way
        (session,) = pair.server.sessions
        (stream_id,) = session._streams
        assert session.buffered(stream_id) <= window
        before = pushed
        await asyncio.sleep(0.5)
        assert pushed == before, "the client kept reading its local socket without credit"
        assert pushed < 64 << 20
        pusher.cancel()
        writer.close()


async def test_a_slow_reader_does_not_stall_other_streams(
    echo_server: Address, transport: str
) -> None:
    settings = Settings(password="pw", window=128 << 10)

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = os.urandom(1 << 16)
        try:
            while True:
                writer.write(block)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    source = await asyncio.start_server(firehose, "127.0.0.1", 0)
    address = Address("127.0.0.1", source.sockets[0].getsockname()[1])
    async with (
        source,
        run_pair(
            transport=transport, targets=[address, echo_server], server_settings=settings
        ) as pair,
    ):
        slow_local = pair.local(address)
        _, slow_writer = await asyncio.open_connection(slow_local.host, slow_local.port)
        await asyncio.sleep(0.5)  # the slow stream is now stuck with a full window
        async with asyncio.timeout(10):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 2 << 20)
        assert sent == echoed
        slow_writer.close()


async def test_a_thousand_connections_at_once_keep_the_server_up(transport: str) -> None:
    async with (
        EchoServer() as echo,
        run_pair(transport=transport, targets=[echo]) as pair,
        asyncio.timeout(60),
    ):
        local = pair.local(echo)

        async def one() -> bytes:
            reader, writer = await asyncio.open_connection(local.host, local.port)
            writer.write(b"x")
            data = await reader.readexactly(1)
            writer.close()
            return data

        results = await asyncio.gather(*(one() for _ in range(1000)), return_exceptions=True)
        ok = sum(r == b"x" for r in results)
        assert ok == 1000, [r for r in results if r != b"x"][:3]
        sent, echoed, *_ = await hashed_exchange(local, 1 << 20)
        assert sent == echoed


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
async def test_either_cipher_works(echo_server: Address, cipher: str, transport: str) -> None:
    client = Settings(password="pw", cipher=cipher)
    async with (
        run_pair(transport=transport, targets=[echo_server], client_settings=client) as pair,
        asyncio.timeout(10),
    ):
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 1 << 20)
        assert sent == echoed


async def test_ws_without_aiohttps_frame_writer_keeps_to_send_bytes(
    echo_server: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flyway_websocket

    carriers: list[flyway_websocket.WebSocketCarrier] = []
    made = flyway_websocket.WebSocketCarrier.__init__

    def without_frame_writer(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        made(self, *args, **kwargs)
        carriers.append(self)

    monkeypatch.setattr(flyway_websocket, "frame_writer", lambda ws: None)
    monkeypatch.setattr(flyway_websocket.WebSocketCarrier, "__init__", without_frame_writer)
    async with run_pair(transport="ws", targets=[echo_server]) as pair, asyncio.timeout(30):
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 4 << 20)
        assert sent == echoed
    assert len(carriers) == 2  # the client's and the server's
    assert not any(carrier.send_nowait(b"x") for carrier in carriers)
