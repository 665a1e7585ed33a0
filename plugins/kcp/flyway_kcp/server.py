"""The server's UDP endpoint: one socket on the HTTP port's number, many conversations.

A datagram is looked up by the session id it starts with. A known one is opened with that
session's key and replay window; anything else may be a hello. A hello whose packet salt a
live or recently ended session's hello had (the client saying it again, or a replay) is
dropped before any crypto, and quietly: counted, with no event per datagram (an ended
session's is remembered for ``ENDED_HELLOS_KEPT`` seconds, past which the front door's clock
check refuses it). Other hellos cost one per-packet open (two HKDFs and AES-GCM, ~7 µs) and
allocate nothing unless they authenticate and the front door accepts them; at most
``HELLOS_PER_BATCH`` are opened per batch of datagrams, so a flood of bogus hellos costs the
live sessions a bounded share of each batch (a real client's hello lost in it is said again).
Whatever fails is dropped without a word: a scanner gets no reply to anything, and no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

from flyway_core import ConfigError, FlywayError
from flyway_core.interfaces import FrontDoor
from flyway_core.protocol import CLOCK_SKEW, ServerConnection
from flyway_core.protocol.crypto import (
    DATAGRAM_HEADER,
    PACKET_SALT_SIZE,
    SERVER_SALT_SIZE,
    SESSION_ID_SIZE,
    PacketSealer,
    derive_master_key,
)
from flyway_core.protocol.errors import RemoteProtocolError
from flyway_kcp.carrier import KcpCarrier
from flyway_kcp.config import KcpConfig
from flyway_kcp.fec import FecEncoder
from flyway_kcp.handshake import (
    HELLO_LABEL,
    MAX_HELLO_DATAGRAM,
    MIN_HELLO_DATAGRAM,
    conv_of,
    keys_for,
    parse_hello,
)
from flyway_kcp.output import DatagramOutput
from flyway_kcp.stats import TALLY
from flyway_kcp.udp import BatchReader, Peer, udp_socket

__all__ = ["KcpServer"]

log = logging.getLogger("flyway.kcp")
CLOSE_WAIT = 5.0  # seconds the endpoint waits for its sessions to end when it stops
HELLOS_PER_BATCH = 16  # hellos opened per batch of datagrams; more wait for the next batch
ENDED_HELLOS_KEPT = 2 * CLOCK_SKEW  # seconds an ended session's hello is still known
ENDED_HELLOS_MAX = 1 << 16  # ended sessions' hellos kept at most (the oldest go first)


def _counter(datagram: bytes) -> int:
    return int.from_bytes(datagram[SESSION_ID_SIZE:DATAGRAM_HEADER], "big")


class KcpServer:
    """Serve KCP conversations on UDP ``door.bound`` until the context is left."""

    def __init__(self, door: FrontDoor, config: KcpConfig, name: str) -> None:
        self._door = door
        self._config = config
        self._name = name
        self._master = derive_master_key(door.settings.password)
        self._hellos = PacketSealer(self._master, HELLO_LABEL)
        self._sessions: dict[bytes, KcpCarrier] = {}
        self._touched: set[KcpCarrier] = set()
        self._hello_salts: dict[bytes, bytes] = {}  # a live session's hello packet salt: its id
        self._salt_of: dict[bytes, bytes] = {}  # and back
        self._ended_hellos: dict[bytes, float] = {}  # an ended one's: until when it is kept
        self._hello_budget = HELLOS_PER_BATCH
        self._sock: socket.socket | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self.dropped = 0  # datagrams that were not ours (or replays), for tests and reports
        self.repeated_hellos = 0  # hellos of live or ended sessions (a part of ``dropped``)

    @property
    def sessions(self) -> dict[bytes, KcpCarrier]:
        """The live conversations by session id."""
        return self._sessions

    @property
    def address(self) -> tuple[str, int]:
        """Where the UDP socket is bound."""
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        bound = self._door.bound
        loop = asyncio.get_running_loop()
        family, _, _, _, where = (
            await loop.getaddrinfo(bound.host or None, bound.port, type=socket.SOCK_DGRAM)
        )[0]
        self._sock = udp_socket(family, bind=(str(where[0]), int(where[1])))
        reader = BatchReader(self._sock, self._datagram, self._batch)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                try:
                    yield
                finally:
                    reader.close()
                    for carrier in list(self._sessions.values()):
                        carrier.shutdown()
        finally:
            self._sock.close()

    def _batch(self) -> None:
        self._hello_budget = HELLOS_PER_BATCH
        touched, self._touched = self._touched, set()
        for carrier in touched:
            carrier.batch_done()

    def _datagram(self, data: bytes, address: Peer) -> None:
        carrier = self._sessions.get(data[:SESSION_ID_SIZE])
        if carrier is None:
            self._hello(data, address)
            return
        opener = carrier.opener
        assert opener is not None  # the server's carriers have theirs
        try:
            segments = opener.open(data)
        except RemoteProtocolError:
            self.dropped += 1
            return
        output = carrier.output
        if output.address != address and _counter(data) == opener.window.newest:
            # Authenticated, and the newest yet: the client moved (NAT). A late datagram
            # from an old address, or a copy raced from elsewhere, does not move it back.
            log.debug("kcp session moved from %s to %s", output.address, address)
            output.address = address
        carrier.datagram_in(segments)
        self._touched.add(carrier)

    def _hello(self, data: bytes, address: Peer) -> None:
        if not MIN_HELLO_DATAGRAM <= len(data) <= MAX_HELLO_DATAGRAM:
            self.dropped += 1
            return
        packet_salt = data[:PACKET_SALT_SIZE]
        if packet_salt in self._hello_salts or self._ended(packet_salt):  # said again, replayed
            self.dropped += 1
            self.repeated_hellos += 1
            return
        if self._hello_budget <= 0:  # a flood: the live sessions' datagrams come first
            self.dropped += 1
            return
        self._hello_budget -= 1
        try:
            fec, hello = parse_hello(self._hellos.open(data))
            config = dataclasses.replace(self._config, fec=fec)  # the client's FEC
        except (RemoteProtocolError, ConfigError):
            self.dropped += 1
            return
        keys = keys_for(self._master, hello)
        session_id = keys.session_id
        if session_id in self._sessions:  # sealed again by a password holder: the session is up
            self.dropped += 1
            return
        peer = address[0]
        connection = self._door.accept(hello, peer)
        if connection is None or self._sock is None or self._tasks is None:
            self.dropped += 1
            return
        k, m = fec
        encoder = FecEncoder(k, m) if k else None
        # The server salt makes this session's sending key its own, even for a hello that a
        # restarted server no longer remembers (PROTOCOL.md §11).
        sealer = keys.server_sealer(os.urandom(SERVER_SALT_SIZE))
        output = DatagramOutput(self._sock, sealer, address, encoder)
        carrier = KcpCarrier(
            conv_of(keys),
            config,
            output,
            keys.server_opener(),
            on_close=lambda: self._forget(session_id),
        )
        self._sessions[session_id] = carrier
        self._hello_salts[packet_salt] = session_id
        self._salt_of[session_id] = packet_salt
        TALLY.track(carrier, "server")
        self._tasks.create_task(self._run(carrier, connection, peer))

    def _ended(self, packet_salt: bytes) -> bool:
        """True if an ended session's hello had ``packet_salt`` not long ago."""
        ended = self._ended_hellos
        if not ended:
            return False
        now = time.monotonic()  # they are kept in the order they ended: prune a few at a time
        for expired in [salt for salt, until in itertools.islice(ended.items(), 8) if until <= now]:
            del ended[expired]
        return packet_salt in ended

    def _forget(self, session_id: bytes) -> None:
        carrier = self._sessions.pop(session_id, None)
        packet_salt = self._salt_of.pop(session_id, None)
        if packet_salt is not None:
            del self._hello_salts[packet_salt]
            ended = self._ended_hellos
            ended[packet_salt] = time.monotonic() + ENDED_HELLOS_KEPT
            if len(ended) > ENDED_HELLOS_MAX:
                del ended[next(iter(ended))]
        if carrier is not None:
            self._touched.discard(carrier)
            TALLY.ended(carrier)

    async def _run(self, carrier: KcpCarrier, connection: ServerConnection, peer: str) -> None:
        try:
            await self._door.run_session(carrier, connection, peer=peer, transport=self._name)
        except (FlywayError, OSError) as exc:
            log.debug("kcp session from %s ended: %s", peer, exc)
        finally:
            await carrier.close()
