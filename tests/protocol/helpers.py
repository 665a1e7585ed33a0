"""Test helpers: a client and a server connection joined in memory, and a few shortcuts."""

from __future__ import annotations

from dataclasses import dataclass, field

from flyway_core.protocol import (
    DEFAULT_WINDOW,
    Cipher,
    ClientConnection,
    Connection,
    ConnectionEvent,
    DataReceived,
    Frame,
    ReplayCache,
    ServerConnection,
    encode_frame,
)

__all__ = [
    "MASTER",
    "NOW",
    "SALT",
    "SERVER_SALT",
    "Flushed",
    "TunnelPair",
    "data_of",
    "inject",
]

MASTER = bytes(range(32))  # a fixed master key: scrypt is slow and not what these tests test
SALT = bytes(range(32, 64))
SERVER_SALT = bytes(range(64, 96))
NOW = 1_700_000_000.0


@dataclass
class Flushed:
    """What each side reported while bytes moved."""

    client: list[ConnectionEvent] = field(default_factory=list)
    server: list[ConnectionEvent] = field(default_factory=list)


class TunnelPair:
    """A client and a server connection whose bytes travel through two in-memory queues.

    Nothing moves until asked: ``deliver_to_server`` / ``deliver_to_client`` move some or all
    of the bytes in flight one way, ``flush()`` moves everything both ways until both are quiet.
    """

    def __init__(
        self,
        *,
        now: float = NOW,
        master: bytes = MASTER,
        client_window: int = DEFAULT_WINDOW,
        server_window: int = DEFAULT_WINDOW,
        cipher: Cipher = Cipher.AES_256_GCM,
        idle_timeout: float = 60.0,
        keepalive: float | None = None,
        replay: ReplayCache | None = None,
        salt: bytes | None = SALT,
        server_salt: bytes | None = SERVER_SALT,
        client_features: int = 0,
        server_features: int = 0,
    ) -> None:
        self.now = now
        self.client = ClientConnection(
            master,
            now=now,
            window=client_window,
            cipher=cipher,
            idle_timeout=idle_timeout,
            keepalive=keepalive,
            features=client_features,
            salt=salt,
            padding=b"",
        )
        self.server = ServerConnection(
            master,
            ReplayCache() if replay is None else replay,
            now=now,
            window=server_window,
            idle_timeout=idle_timeout,
            features=server_features,
            padding=b"",
            server_salt=server_salt,
        )
        self.to_server = bytearray()  # in flight from client to server
        self.to_client = bytearray()

    def pump(self) -> None:
        """Collect what both sides queued into the in-flight buffers."""
        self.to_server += self.client.data_to_send()
        self.to_client += self.server.data_to_send()

    def deliver_to_server(self, size: int | None = None) -> list[ConnectionEvent]:
        """Move ``size`` bytes (default: all) in flight to the server; return its events."""
        self.pump()
        return _deliver(self.to_server, self.server, size, self.now)

    def deliver_to_client(self, size: int | None = None) -> list[ConnectionEvent]:
        """Move ``size`` bytes (default: all) in flight to the client; return its events."""
        self.pump()
        return _deliver(self.to_client, self.client, size, self.now)

    def flush(self) -> Flushed:
        """Move bytes both ways until neither side has anything more to say."""
        flushed = Flushed()
        while True:
            self.pump()
            if not self.to_server and not self.to_client:
                return flushed
            flushed.server += self.deliver_to_server()
            flushed.client += self.deliver_to_client()


def _deliver(
    queue: bytearray, conn: Connection, size: int | None, now: float
) -> list[ConnectionEvent]:
    size = len(queue) if size is None else min(size, len(queue))
    chunk = bytes(queue[:size])
    del queue[:size]
    return conn.receive_data(chunk, now)


def data_of(events: list[ConnectionEvent], stream_id: int) -> bytes:
    """Return the bytes ``events`` delivered on ``stream_id``, joined."""
    return b"".join(
        e.data for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id
    )


def inject(conn: Connection, frame: Frame) -> None:
    """Make ``conn`` send ``frame`` whatever its state: the only way to play a rogue peer."""
    assert conn._writer is not None
    conn._out.extend(conn._writer.seal_parts(encode_frame(frame)))
