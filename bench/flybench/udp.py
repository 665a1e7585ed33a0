"""The UDP row: 64-byte datagram round trips, direct and through a ``-D`` UDP association.

``UdpEcho`` is the far end (one more target server, started by the driver).
``udp_round_trips`` sends one datagram at a time and waits for its echo: straight
to the echo for ``direct``, and for a column reached through SOCKS5 (``ViaSocks5``
endpoints) through a UDP ASSOCIATE on its ``-D`` port, the SOCKS UDP header in
front of each datagram, as PySocks or a browser's DNS over SOCKS sends it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from typing import Any, cast

from .wire import HOST, Endpoint, ViaSocks5

__all__ = ["UdpEcho", "udp_round_trips"]

TIMEOUT = 2.0  # seconds one datagram's echo may take before it counts as lost


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


class UdpEcho:
    """A UDP echo server on ``HOST``."""

    def __init__(self) -> None:
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait(data)


async def _associate(proxy: int) -> tuple[asyncio.StreamWriter, tuple[str, int]]:
    reader, writer = await asyncio.open_connection(HOST, proxy)
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise ConnectionError("SOCKS5: no-authentication method refused")
    writer.write(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    reply = await reader.readexactly(10)
    if reply[1] != 0 or reply[3] != 1:
        raise ConnectionError(f"SOCKS5 UDP ASSOCIATE refused: {reply.hex()}")
    return writer, (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0])


async def udp_round_trips(
    endpoint: Endpoint, echo_port: int, count: int, warmup: int
) -> dict[str, Any]:
    """``count`` timed 64-byte datagram round trips (after ``warmup``), one at a time."""
    from .workloads import stats  # the same statistics as the TCP round trips

    loop = asyncio.get_running_loop()
    control: asyncio.StreamWriter | None = None
    header = b""
    destination = (HOST, echo_port)
    if isinstance(endpoint, ViaSocks5):
        control, destination = await _associate(endpoint.proxy)
        header = b"\x00\x00\x00\x01" + socket.inet_aton(HOST) + echo_port.to_bytes(2, "big")
    transport, answers = await loop.create_datagram_endpoint(
        _Answers, local_addr=(HOST, 0), remote_addr=destination
    )
    body = os.urandom(56)
    samples: list[float] = []
    lost = 0
    try:
        for i in range(warmup + count):
            payload = header + i.to_bytes(8, "big") + body
            start = time.perf_counter_ns()
            transport.sendto(payload)
            try:
                await _echo_of(answers.queue, payload[-64:])
            except TimeoutError:
                lost += 1  # UDP: a datagram may be lost; many lost is a failure
                if lost > max(2, count // 100):
                    raise AssertionError(f"{lost} datagrams lost of {i + 1}") from None
                continue
            elapsed = time.perf_counter_ns() - start
            if i >= warmup:
                samples.append(elapsed / 1000)
    finally:
        transport.close()
        if control is not None:
            control.close()
    return {**stats(samples), "raw_us": samples, "lost": lost}


async def _echo_of(queue: asyncio.Queue[bytes], payload: bytes) -> None:
    """Wait for the echo of ``payload``; late echoes of earlier (lost) datagrams are skipped."""
    async with asyncio.timeout(TIMEOUT):
        while (await queue.get())[-64:] != payload:
            pass
