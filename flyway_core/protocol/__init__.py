"""flyway's wire protocol, sans-I/O: keys, records, frames, and the connections that use them.

Feed a connection the bytes a carrier delivered, act on the events it returns, and send what
``data_to_send()`` gives back. Nothing here does I/O or reads a clock. ``docs/PROTOCOL.md``
documents the bytes.
"""

from __future__ import annotations

from flyway_core.protocol.address import Address, split_host_port
from flyway_core.protocol.addressing import AddressType
from flyway_core.protocol.base import Connection
from flyway_core.protocol.connection import ClientConnection, ServerConnection
from flyway_core.protocol.constants import (
    CLOCK_SKEW,
    DEFAULT_WINDOW,
    FRAME_FEATURES,
    INITIAL_WINDOW,
    MAX_DATA,
    MAX_WINDOW,
    MIN_WINDOW,
    PROTOCOL_VERSION,
    SUPPORTED_FEATURES,
    CloseReason,
    Feature,
    FrameType,
    ResetReason,
)
from flyway_core.protocol.crypto import (
    SALT_SIZE,
    Cipher,
    Opener,
    PacketSealer,
    Sealer,
    derive_master_key,
    session_keys,
)
from flyway_core.protocol.errors import (
    ConfigError,
    FlywayError,
    HandshakeRejected,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from flyway_core.protocol.events import (
    ConnectionEvent,
    CreditAvailable,
    DataReceived,
    PongReceived,
    SessionClosed,
    SessionStarted,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from flyway_core.protocol.frames import (
    Accept,
    AcceptBound,
    Close,
    Data,
    End,
    Frame,
    Hello,
    Open,
    Ping,
    Pong,
    Reset,
    Welcome,
    Window,
    decode_frame,
    encode_frame,
    max_open_data,
)
from flyway_core.protocol.records import MAX_PLAINTEXT, RecordReader, RecordWriter
from flyway_core.protocol.replay import ReplayCache

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_WINDOW",
    "FRAME_FEATURES",
    "SUPPORTED_FEATURES",
    "INITIAL_WINDOW",
    "MAX_DATA",
    "MAX_PLAINTEXT",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "PROTOCOL_VERSION",
    "SALT_SIZE",
    "Accept",
    "AcceptBound",
    "Address",
    "AddressType",
    "Cipher",
    "ClientConnection",
    "Close",
    "CloseReason",
    "ConfigError",
    "Connection",
    "CreditAvailable",
    "Data",
    "DataReceived",
    "End",
    "ConnectionEvent",
    "Feature",
    "FlywayError",
    "Frame",
    "FrameType",
    "HandshakeRejected",
    "Hello",
    "LocalProtocolError",
    "Open",
    "Opener",
    "PacketSealer",
    "Ping",
    "Pong",
    "PongReceived",
    "ProtocolError",
    "RecordReader",
    "RecordWriter",
    "RemoteProtocolError",
    "ReplayCache",
    "Reset",
    "ResetReason",
    "Sealer",
    "ServerConnection",
    "SessionClosed",
    "SessionStarted",
    "StreamAccepted",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "Welcome",
    "Window",
    "decode_frame",
    "derive_master_key",
    "encode_frame",
    "max_open_data",
    "session_keys",
    "split_host_port",
]
