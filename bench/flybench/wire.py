"""What goes over the wire: sizes, the request header, the verifiable data, the connections.

Every request to sink/source/duplex starts with ``HEADER`` (length, seed, tag). The data
is ``pattern(N, seed)``, whose hash is computed (and cached) before any timing starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "BLOCK",
    "HEADER",
    "HOST",
    "Endpoint",
    "KiB",
    "MB",
    "MiB",
    "SEED_DOWN",
    "SEED_DUPLEX_DOWN",
    "SEED_DUPLEX_UP",
    "SEED_UP",
    "TARGETS",
    "ViaSocks5",
    "close",
    "connect",
    "next_tag",
    "open_plain",
    "pattern",
    "pattern_hash",
]

HOST = "127.0.0.1"
KiB = 1 << 10
MiB = 1 << 20
MB = 1_000_000
TARGETS = ("echo", "sink", "source", "duplex", "idle")
# Every request to sink/source/duplex starts with (length, seed, tag), big-endian u64s.
HEADER = struct.Struct(">QQQ")
SEED_UP, SEED_DOWN, SEED_DUPLEX_UP, SEED_DUPLEX_DOWN = 1, 2, 3, 4
BLOCK = os.urandom(MiB)


def pattern(nbytes: int, seed: int) -> Iterator[bytes]:
    """``nbytes`` of random-looking data: 1 MiB chunks of one random block, each stamped.

    Each chunk starts with (seed, index), so a lost, repeated or reordered chunk changes
    the hash; the rest of the chunk is the same random block (cheap to produce).
    """
    tail = BLOCK[16:]
    index = 0
    while nbytes > 0:
        chunk = struct.pack(">QQ", seed, index) + tail
        if nbytes < len(chunk):
            chunk = chunk[:nbytes]
        yield chunk
        nbytes -= len(chunk)
        index += 1


_hashes: dict[tuple[int, int], str] = {}


def pattern_hash(nbytes: int, seed: int) -> str:
    """sha256 hex of ``pattern(nbytes, seed)``, cached (computed before any timing starts)."""
    key = (nbytes, seed)
    if key not in _hashes:
        digest = hashlib.sha256()
        for chunk in pattern(nbytes, seed):
            digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


_tags = iter(range(1, 1 << 62))


def next_tag() -> int:
    """A tag no other request of this run carries (the sink records its EOF time by tag)."""
    return next(_tags)


@dataclass(frozen=True, slots=True)
class ViaSocks5:
    """A target port on ``HOST`` reached through a SOCKS5 proxy on ``HOST`` (the ``-D`` port)."""

    proxy: int
    target: int


# A column's way to a target: a forwarded local port (-L), or a target behind SOCKS5 (-D).
Endpoint = int | ViaSocks5


async def connect(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to ``endpoint`` with 4 MiB read and write buffers."""
    reader, writer = await open_plain(endpoint, limit=4 * MiB)
    writer.transport.set_write_buffer_limits(high=4 * MiB)
    return reader, writer


async def open_plain(
    endpoint: Endpoint, limit: int = 1 << 16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to ``endpoint`` (through its SOCKS5 CONNECT, if it has one)."""
    if isinstance(endpoint, int):
        return await asyncio.open_connection(HOST, endpoint, limit=limit)
    reader, writer = await asyncio.open_connection(HOST, endpoint.proxy, limit=limit)
    try:
        await _socks5_connect(reader, writer, endpoint.target)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _socks5_connect(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
) -> None:
    """RFC 1928 as curl speaks it: greet (no auth), wait for the method, CONNECT, wait."""
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise ConnectionError("SOCKS5: no-authentication method refused")
    writer.write(b"\x05\x01\x00\x01" + bytes(map(int, HOST.split("."))) + port.to_bytes(2, "big"))
    head = await reader.readexactly(4)
    if head[1] != 0:
        raise ConnectionError(f"SOCKS5 CONNECT failed: REP {head[1]:#04x}")
    if head[3] == 3:
        await reader.readexactly((await reader.readexactly(1))[0] + 2)
    else:
        await reader.readexactly({1: 4, 4: 16}.get(head[3], 4) + 2)  # BND.ADDR, BND.PORT


async def close(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and wait (up to 5 s) until it is closed; errors are no news here."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        async with asyncio.timeout(5):
            await writer.wait_closed()
