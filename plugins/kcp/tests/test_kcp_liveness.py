"""A peer that vanishes, and a client whose address changes under a NAT."""

from __future__ import annotations

import asyncio
import hashlib
import os

from intermediaries.lossy_udp import Impairment
from kcp_pairs import kcp_pair

from flyway_core import Settings
from flyway_core.events import SessionUp

CLEAN = Impairment(delay=0.005)
IDLE = 3.0  # -t for these tests


async def test_a_vanished_server_fails_the_streams_within_t_and_a_new_session_follows() -> None:
    settings = Settings(password="pw", idle_timeout=IDLE)
    async with kcp_pair(up=CLEAN, down=CLEAN, settings=settings) as pair:
        loop = asyncio.get_running_loop()
        local = pair.local("echo")
        reader, writer = await asyncio.open_connection(local.host, local.port)
        writer.write(b"ping")
        async with asyncio.timeout(5):
            assert await reader.readexactly(4) == b"ping"

        pair.relay.blocked = True  # the server is gone: nothing passes either way
        started = loop.time()
        async with asyncio.timeout(IDLE * 3):
            try:
                while await reader.read(1 << 16):
                    pass
            except ConnectionError:
                pass
        failed_after = loop.time() - started
        writer.close()
        assert failed_after < IDLE + 1.0  # within -t of the last datagram heard, plus the timer

        pair.relay.blocked = False
        async with asyncio.timeout(IDLE * 5):
            while True:  # the next connection rides a new session once the client redials
                reader, writer = await asyncio.open_connection(local.host, local.port)
                writer.write(b"again")
                try:
                    if await reader.readexactly(5) == b"again":
                        break
                except (ConnectionError, asyncio.IncompleteReadError):
                    await asyncio.sleep(0.2)
                finally:
                    writer.close()
        assert sum(isinstance(e, SessionUp) for e in pair.client_events) == 2


async def test_a_client_whose_source_port_changes_keeps_its_session() -> None:
    async with kcp_pair() as pair:  # 5% loss, 30 ms each way
        endpoint = pair.endpoint
        local = pair.local("sink")
        reader, writer = await asyncio.open_connection(local.host, local.port)
        digest = hashlib.sha256()
        old_port = pair.relay.source_port
        async with asyncio.timeout(60):
            for i in range(64):
                data = os.urandom(1 << 16)
                digest.update(data)
                writer.write(data)
                await writer.drain()
                if i == 16:
                    await pair.relay.rebind()  # the NAT gives the client a new port
            writer.write_eof()
            assert (await reader.read()).decode() == digest.hexdigest()
        writer.close()
        (carrier,) = endpoint.sessions.values()
        assert carrier.output.address == ("127.0.0.1", pair.relay.source_port)
        assert pair.relay.source_port != old_port
        assert sum(isinstance(e, SessionUp) for e in pair.client_events) == 1
