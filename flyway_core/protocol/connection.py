"""Client and server connections: each end of a session, from handshake to close.

Theory of operation
===================

Session lifecycle::

    client:  HELLO_SENT --Welcome--> STARTED --Close sent/received, idle timeout--> CLOSED
    server:  AWAITING_HELLO --valid Hello--> STARTED (Welcome queued) --...--> CLOSED
    either:  a RemoteProtocolError in receive_data --> FAILED (every later receive raises)

The client queues its salt and Hello when it is built and may open streams and send data at once
(0-RTT): until Welcome arrives it assumes the server granted ``INITIAL_WINDOW`` per stream, then
corrects each stream's credit by the difference. Anything but a valid Welcome first, including
bytes that fail authentication (a fallback web page, say), raises HandshakeRejected.

The server accepts nothing but a valid Hello first (``handshake.py``) and rejects anything else
with HandshakeRejected, which the front door turns into its fallback answer. Once accepted it
queues Welcome, reports SessionStarted, and handles whatever records followed the Hello.
"""

from __future__ import annotations

import contextlib
import os

from flyway_core.protocol.address import Address
from flyway_core.protocol.base import Connection
from flyway_core.protocol.constants import (
    DEFAULT_WINDOW,
    MAX_STREAM_ID,
    PROTOCOL_VERSION,
    Feature,
)
from flyway_core.protocol.crypto import SALT_SIZE, Bytes, Cipher, Opener, Sealer
from flyway_core.protocol.errors import HandshakeRejected, LocalProtocolError, RemoteProtocolError
from flyway_core.protocol.events import (
    ConnectionEvent,
    CreditAvailable,
    FlowOpened,
    SessionStarted,
    StreamAccepted,
    StreamOpened,
)
from flyway_core.protocol.frames import (
    Accept,
    AcceptBound,
    Frame,
    Hello,
    Open,
    OpenFlow,
    Welcome,
    encode_frame,
)
from flyway_core.protocol.handshake import (
    HelloReader,
    check_window,
    client_key,
    random_padding,
    server_key,
)
from flyway_core.protocol.records import RecordReader, RecordWriter
from flyway_core.protocol.replay import ReplayCache
from flyway_core.protocol.streams import HalfState, StreamState

__all__ = ["ClientConnection", "Connection", "ServerConnection"]


class ClientConnection(Connection):
    """The client end: queues salt and Hello at once, opens streams, sends keepalives."""

    _peer = "server"

    def __init__(
        self,
        master_key: bytes,
        *,
        now: float,
        window: int = DEFAULT_WINDOW,
        cipher: Cipher = Cipher.AES_256_GCM,
        idle_timeout: float = 60.0,
        keepalive: float | None = None,
        features: int = 0,
        salt: bytes | None = None,
        padding: bytes | None = None,
    ) -> None:
        keepalive = idle_timeout / 3 if keepalive is None else keepalive
        super().__init__(
            now=now,
            window=window,
            idle_timeout=idle_timeout,
            keepalive=keepalive,
            features=features,
        )
        salt = os.urandom(SALT_SIZE) if salt is None else salt
        if len(salt) != SALT_SIZE:
            raise LocalProtocolError(f"salt must be {SALT_SIZE} bytes")
        self._cipher = self._session_cipher = cipher
        self._writer = RecordWriter(Sealer(client_key(master_key, salt, cipher), cipher))
        self._reader = None  # until the server's salt has come: it makes the key
        self._master, self._salt = master_key, salt
        self._server_salt = bytearray()
        padding = random_padding() if padding is None else padding
        hello = Hello(PROTOCOL_VERSION, max(0, int(now * 1000)), window, features, padding)
        self._out.append(salt + self._writer.seal(encode_frame(hello)))
        self._hello_queued = True

    def hello(self) -> bytes:
        """Take the salt and Hello record out of the queue, to carry them out of band."""
        if not self._hello_queued:
            raise LocalProtocolError("hello() must come before the first data_to_send()")
        self._hello_queued = False
        return self._out.pop(0)

    def data_to_send(self) -> bytes:
        self._hello_queued = False
        return super().data_to_send()

    def _next_id(self) -> int:
        self._usable()
        stream_id = self._highest_id + 2 if self._highest_id else 1
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids are exhausted: start a new session")
        return stream_id

    def open_stream(self, target: Address, data: bytes = b"") -> int:
        stream_id = self._next_id()
        frame = Open(stream_id, target, bytes(data))
        stream = StreamState(
            stream_id, sending=HalfState.OPEN, receiving=HalfState.PENDING, credit=self._peer_window
        )
        stream.spend(len(data))
        self._send(frame)
        self._streams[stream_id] = stream
        self._highest_id = stream_id
        return stream_id

    def open_flow(self) -> int:
        """Open a datagram flow; return its id. Datagrams may follow at once (no round trip).

        Needs feature DATAGRAM_FLOWS, so it waits for the Welcome: LocalProtocolError
        before it, or when the server does not speak it.
        """
        stream_id = self._next_id()
        if not self._started:
            raise LocalProtocolError("a flow waits for the Welcome (features are not known yet)")
        self._send(OpenFlow(stream_id))  # LocalProtocolError: the server has no flows
        self._streams[stream_id] = StreamState(
            stream_id, sending=HalfState.OPEN, receiving=HalfState.PENDING, credit=0, flow=True
        )
        self._highest_id = stream_id
        return stream_id

    def _receive(self, data: Bytes, now: float) -> list[ConnectionEvent]:
        if self._reader is None:  # the server's salt first, then its records
            wanted = SALT_SIZE - len(self._server_salt)
            self._server_salt += data[:wanted]
            data = data[wanted:]
            if len(self._server_salt) < SALT_SIZE:
                return []
            salts = (self._salt, bytes(self._server_salt))
            key = server_key(self._master, *salts, self._session_cipher)
            self._reader = RecordReader(Opener(key, self._session_cipher))
        try:
            return super()._receive(data, now)
        except RemoteProtocolError as exc:
            if self._started or isinstance(exc, HandshakeRejected):
                raise
            raise HandshakeRejected(f"not a flyway server, or the key differs ({exc})") from exc

    def _discard_input(self) -> None:
        super()._discard_input()
        self._server_salt = bytearray(SALT_SIZE)  # nothing more is read: no new reader

    def _start(self, frame: Frame, events: list[ConnectionEvent]) -> None:
        if not isinstance(frame, Welcome):
            raise HandshakeRejected(f"expected WELCOME, got {frame.frame_type.name}")
        if frame.version != PROTOCOL_VERSION:
            raise HandshakeRejected(f"unsupported version {frame.version}")
        check_window(frame.window, HandshakeRejected)
        self._started = True
        self._shared = self._features & frame.features
        credit = min(frame.window, self._window)  # never more in flight than we would buffer
        correction = credit - self._peer_window
        self._peer_window = credit
        events.append(SessionStarted(self._session_cipher, frame.window))
        for stream in self._streams.values():  # only byte streams: flows open after this
            stream.credit += correction
            if correction:
                events.append(CreditAvailable(stream.stream_id))

    def _handle_role(self, frame: Frame, events: list[ConnectionEvent]) -> None:
        if not isinstance(frame, Accept | AcceptBound):
            super()._handle_role(frame, events)
        elif stream := self._incoming(frame.stream_id, frame):
            stream.receive(frame.frame_type)
            bound = frame.bound if isinstance(frame, AcceptBound) else None
            events.append(StreamAccepted(frame.stream_id, bound))


class ServerConnection(Connection):
    """The server end: checks the Hello, accepts streams, answers with Welcome."""

    _peer = "client"

    def __init__(
        self,
        master_key: bytes,
        replay: ReplayCache,
        *,
        now: float,
        window: int = DEFAULT_WINDOW,
        idle_timeout: float = 60.0,
        features: int = 0,
        padding: bytes | None = None,
        server_salt: bytes | None = None,
    ) -> None:
        super().__init__(
            now=now, window=window, idle_timeout=idle_timeout, keepalive=None, features=features
        )
        if server_salt is not None and len(server_salt) != SALT_SIZE:
            raise LocalProtocolError(f"salt must be {SALT_SIZE} bytes")
        self._server_salt = server_salt  # fixed only by tests: random per session otherwise
        self._hello: HelloReader | None = HelloReader(master_key, replay)
        self._master = master_key
        self._padding = padding
        self.hello_size = 0  # bytes the salt and Hello took, once accepted

    @property
    def accepted(self) -> bool:
        """True once a valid Hello has arrived."""
        return self._started

    def _discard_input(self) -> None:
        super()._discard_input()
        self._hello = None

    def _receive(self, data: Bytes, now: float) -> list[ConnectionEvent]:
        if self._hello is None:
            return super()._receive(data, now)
        handshake = self._hello.receive(data, now)
        if handshake is None:
            return []
        self._hello = None
        self.hello_size = handshake.size
        hello, cipher = handshake.hello, handshake.cipher
        self._cipher = cipher
        self._reader = handshake.reader
        server_salt = self._server_salt or os.urandom(SALT_SIZE)
        key = server_key(self._master, handshake.salt, server_salt, cipher)
        self._writer = RecordWriter(Sealer(key, cipher))
        self._out.append(server_salt)  # in clear, before the Welcome
        self._peer_window = min(hello.window, self._window)  # at most our own window in flight
        self._started = True
        self._shared = self._features & hello.features
        padding = random_padding() if self._padding is None else self._padding
        self._send(Welcome(PROTOCOL_VERSION, self._window, self._features, padding))
        events: list[ConnectionEvent] = [SessionStarted(cipher, hello.window)]
        return events + super()._receive(b"", now)

    def accept_stream(self, stream_id: int, bound: Address | None = None) -> None:
        stream = self._stream(stream_id)
        frame: Accept | AcceptBound = Accept(stream_id)
        if bound is not None and Feature.BOUND_ADDRESS & self._shared:
            with contextlib.suppress(LocalProtocolError):  # scoped IPv6: the wire cannot carry it
                frame = AcceptBound(stream_id, bound)
        stream.send(frame.frame_type)
        self._send(frame)

    def _handle_role(self, frame: Frame, events: list[ConnectionEvent]) -> None:
        if not isinstance(frame, Open | OpenFlow):
            super()._handle_role(frame, events)
            return
        stream_id = frame.stream_id
        if stream_id % 2 == 0 or stream_id <= self._highest_id:
            raise RemoteProtocolError(f"{frame.frame_type.name} may not use stream id {stream_id}")
        self._highest_id = stream_id
        if isinstance(frame, OpenFlow):
            self._streams[stream_id] = StreamState(
                stream_id, sending=HalfState.PENDING, receiving=HalfState.OPEN, credit=0, flow=True
            )
            events.append(FlowOpened(stream_id))
            return
        stream = StreamState(
            stream_id, sending=HalfState.PENDING, receiving=HalfState.OPEN, credit=self._peer_window
        )
        stream.take(len(frame.data), self._window)
        self._streams[stream_id] = stream
        events.append(StreamOpened(stream_id, frame.target, frame.data))
