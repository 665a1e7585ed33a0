"""Events: what a connection reports after it has been fed received bytes (or the time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from flyway_core.protocol.address import Address
from flyway_core.protocol.constants import CloseReason, ResetReason
from flyway_core.protocol.crypto import Cipher

__all__ = [
    "CreditAvailable",
    "DataReceived",
    "DatagramReceived",
    "ConnectionEvent",
    "FlowOpened",
    "PongReceived",
    "SessionClosed",
    "SessionStarted",
    "StreamAccepted",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The handshake is done: the server accepted a Hello, or the client received Welcome.

    ``peer_window`` is the per-stream receive window the peer granted (our send credit).
    """

    cipher: Cipher
    peer_window: int


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """Server side: the client opened ``stream_id`` to ``target``, sending ``data`` along."""

    stream_id: int
    target: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class FlowOpened:
    """Server side: the client opened datagram flow ``stream_id`` (feature DATAGRAM_FLOWS)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """One datagram of a flow: its destination (from the client) or its source (from the
    server), and its bytes. Datagrams take no flow-control credit: nothing to acknowledge."""

    stream_id: int
    address: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """Client side: the server reached the stream's target.

    ``bound`` is the server's local address of its connection to the target, when the
    session uses ``Feature.BOUND_ADDRESS`` and the server reported it; else None.
    """

    stream_id: int
    bound: Address | None = None


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes of a stream, in order; call ``acknowledge()`` once they are consumed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer will send no more data on the stream (it may still read)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset the stream: it is gone in both directions."""

    stream_id: int
    reason: ResetReason
    message: str


@dataclass(frozen=True, slots=True)
class CreditAvailable:
    """Our send window for the stream grew: wake whoever waits to send on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The peer answered one of our pings after ``rtt`` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over: the peer sent Close, or nothing arrived for the idle timeout."""

    reason: CloseReason
    message: str


ConnectionEvent: TypeAlias = (
    SessionStarted
    | StreamOpened
    | FlowOpened
    | StreamAccepted
    | DataReceived
    | DatagramReceived
    | StreamEnded
    | StreamReset
    | CreditAvailable
    | PongReceived
    | SessionClosed
)
