"""A stream the client resets is dialed no further, however soon the Reset comes."""

from __future__ import annotations

import asyncio

from flyway_core import Address, Settings
from flyway_core.memory import MemoryTransport
from flyway_core.server import FlywayServer
from flyway_core.testing import joined_tunnel
from flyway_core.testing.ports import blackhole
from flyway_core.upstream import TARGET_TIMEOUT


async def test_a_stream_reset_in_the_same_read_as_its_open_is_not_dialed() -> None:
    """The Open and the Reset leave in one carrier write (the session sends what is
    queued at the reset), so the server reads both at once: its dial of a target that
    never answers must not go on to ``TARGET_TIMEOUT``."""
    with blackhole() as port:
        async with joined_tunnel(Settings(password="pw")) as tunnel:
            assert isinstance(tunnel.transport, MemoryTransport)
            door = tunnel.transport.door
            assert isinstance(door, FlywayServer)
            session = await tunnel.wait_ready()
            stream = session.open_stream(Address("127.0.0.1", port), origin="test")
            stream.reset()
            await asyncio.sleep(TARGET_TIMEOUT / 20)  # the server read both long ago
            assert [s.open_streams for s in door.sessions] == [0]
