"""Frames: the one message each record carries, as dataclasses, and their byte layout.

Every frame is ``type: u8, stream_id: u32`` followed by a payload whose layout depends on the
type (``docs/PROTOCOL.md`` has a table per frame). Frames validate themselves when built, raising
LocalProtocolError; ``decode_frame`` turns every malformation into RemoteProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias, TypeVar

from flyway_core.protocol.address import Address
from flyway_core.protocol.addressing import address_size, decode_address, encode_address
from flyway_core.protocol.constants import (
    FRAME_HEADER_SIZE,
    MAX_DATA,
    MAX_MESSAGE,
    MAX_STREAM_ID,
    CloseReason,
    FrameType,
    ResetReason,
)
from flyway_core.protocol.crypto import Bytes
from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Accept",
    "AcceptBound",
    "Close",
    "Data",
    "Datagram",
    "End",
    "Frame",
    "Hello",
    "Open",
    "OpenFlow",
    "Ping",
    "Pong",
    "Reset",
    "Welcome",
    "Window",
    "decode_frame",
    "encode_data",
    "encode_frame",
    "max_datagram",
    "max_open_data",
    "truncate_message",
]

_HEADER = struct.Struct(">BI")
_HELLO = struct.Struct(">BQII")  # version, timestamp_ms, window, features
_WELCOME = struct.Struct(">BII")  # version, window, features
_U32 = struct.Struct(">I")
_DATA = int(FrameType.DATA)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise LocalProtocolError(message)


def _check_stream_id(stream_id: int) -> None:
    _require(0 < stream_id <= MAX_STREAM_ID, f"stream id {stream_id} is out of range")


def _check_message(message: str) -> None:
    _require(len(message.encode("utf-8")) <= MAX_MESSAGE, f"message over {MAX_MESSAGE} bytes")


def truncate_message(message: str) -> str:
    """Cut ``message`` to at most ``MAX_MESSAGE`` utf-8 bytes, on a character boundary."""
    return message.encode("utf-8")[:MAX_MESSAGE].decode("utf-8", "ignore")


def max_open_data(target: Address) -> int:
    """Return how many bytes of initial data fit in an Open frame for ``target``."""
    return MAX_DATA - address_size(target)


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's first record: who it is (by the key), when, what it grants per stream,
    and the optional features it speaks (``Feature`` bits)."""

    frame_type: ClassVar[FrameType] = FrameType.HELLO
    version: int
    timestamp_ms: int
    window: int
    features: int = 0
    padding: bytes = b""

    def __post_init__(self) -> None:
        _require(0 <= self.version <= 255, "version must fit a u8")
        _require(0 <= self.timestamp_ms < 2**64, "timestamp must fit a u64")
        _require(0 <= self.window < 2**32, "window must fit a u32")
        _require(0 <= self.features < 2**32, "features must fit a u32")
        _require(len(self.padding) <= MAX_DATA - _HELLO.size, "padding too long")


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's first record: the handshake is accepted; its per-stream receive window and
    the optional features it speaks (``Feature`` bits)."""

    frame_type: ClassVar[FrameType] = FrameType.WELCOME
    version: int
    window: int
    features: int = 0
    padding: bytes = b""

    def __post_init__(self) -> None:
        _require(0 <= self.version <= 255, "version must fit a u8")
        _require(0 <= self.window < 2**32, "window must fit a u32")
        _require(0 <= self.features < 2**32, "features must fit a u32")
        _require(len(self.padding) <= MAX_DATA - _WELCOME.size, "padding too long")


@dataclass(frozen=True, slots=True)
class Open:
    """Open stream ``stream_id`` to ``target``, with the first bytes for it (may be empty)."""

    frame_type: ClassVar[FrameType] = FrameType.OPEN
    stream_id: int
    target: Address
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        limit = max_open_data(self.target)
        _require(len(self.data) <= limit, f"initial data over {limit} bytes for {self.target}")


def max_datagram(address: Address) -> int:
    """Return the largest datagram payload a Datagram frame addressed ``address`` carries."""
    return MAX_DATA - address_size(address)


@dataclass(frozen=True, slots=True)
class OpenFlow:
    """Open flow ``stream_id``: a stream of addressed datagrams (feature DATAGRAM_FLOWS)."""

    frame_type: ClassVar[FrameType] = FrameType.OPEN_FLOW
    stream_id: int

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram of a flow: to ``address`` from the client, from ``address`` from the server.

    ``data`` may be empty (UDP allows it); it is never split or joined with another.
    """

    frame_type: ClassVar[FrameType] = FrameType.DATAGRAM
    stream_id: int
    address: Address
    data: bytes

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        limit = max_datagram(self.address)
        _require(len(self.data) <= limit, f"datagram over {limit} bytes for {self.address}")


@dataclass(frozen=True, slots=True)
class Accept:
    """The server reached the stream's target; data may flow back."""

    frame_type: ClassVar[FrameType] = FrameType.ACCEPT
    stream_id: int

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(frozen=True, slots=True)
class AcceptBound:
    """Accept, naming ``bound``: the server's local address of its connection to the target
    (what the target sees as its peer). Sent only in sessions using ``Feature.BOUND_ADDRESS``."""

    frame_type: ClassVar[FrameType] = FrameType.ACCEPT_BOUND
    stream_id: int
    bound: Address

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        encode_address(self.bound)  # raises LocalProtocolError if the wire cannot carry it


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes of a stream, in order."""

    frame_type: ClassVar[FrameType] = FrameType.DATA
    stream_id: int
    data: bytes

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _require(0 < len(self.data) <= MAX_DATA, f"data frames carry 1-{MAX_DATA} bytes")


@dataclass(frozen=True, slots=True)
class End:
    """The sender will send no more data on this stream (half-close)."""

    frame_type: ClassVar[FrameType] = FrameType.END
    stream_id: int

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream is over in both directions, for ``reason``."""

    frame_type: ClassVar[FrameType] = FrameType.RESET
    stream_id: int
    reason: ResetReason
    message: str = ""

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _check_message(self.message)


@dataclass(frozen=True, slots=True)
class Window:
    """The sender consumed ``increment`` more bytes of the stream: the peer may send that many."""

    frame_type: ClassVar[FrameType] = FrameType.WINDOW
    stream_id: int
    increment: int

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _require(0 < self.increment < 2**32, "window increment must be 1 to 2**32-1")


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a Pong carrying the same 8 bytes."""

    frame_type: ClassVar[FrameType] = FrameType.PING
    payload: bytes

    def __post_init__(self) -> None:
        _require(len(self.payload) == 8, "ping payload must be 8 bytes")


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a Ping, echoing its 8 bytes."""

    frame_type: ClassVar[FrameType] = FrameType.PONG
    payload: bytes

    def __post_init__(self) -> None:
        _require(len(self.payload) == 8, "pong payload must be 8 bytes")


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over; nothing follows this frame."""

    frame_type: ClassVar[FrameType] = FrameType.CLOSE
    reason: CloseReason
    message: str = ""

    def __post_init__(self) -> None:
        _check_message(self.message)


Frame: TypeAlias = (
    Hello
    | Welcome
    | Open
    | Accept
    | AcceptBound
    | Data
    | End
    | Reset
    | Window
    | Ping
    | Pong
    | Close
    | OpenFlow
    | Datagram
)


def encode_frame(frame: Frame) -> bytes:
    """Return the plaintext of the record carrying ``frame``."""
    match frame:
        case Data(stream_id, data):
            return _HEADER.pack(FrameType.DATA, stream_id) + data
        case Window(stream_id, increment):
            return _HEADER.pack(FrameType.WINDOW, stream_id) + _U32.pack(increment)
        case Open(stream_id, target, data):
            return _HEADER.pack(FrameType.OPEN, stream_id) + encode_address(target) + data
        case Accept(stream_id) | End(stream_id) | OpenFlow(stream_id):
            return _HEADER.pack(frame.frame_type, stream_id)
        case Datagram(stream_id, address, data):
            return _HEADER.pack(FrameType.DATAGRAM, stream_id) + encode_address(address) + data
        case AcceptBound(stream_id, bound):
            return _HEADER.pack(FrameType.ACCEPT_BOUND, stream_id) + encode_address(bound)
        case Reset(stream_id, reason, message):
            return _HEADER.pack(FrameType.RESET, stream_id) + bytes([reason]) + message.encode()
        case Ping(payload) | Pong(payload):
            return _HEADER.pack(frame.frame_type, 0) + payload
        case Close(reason, message):
            return _HEADER.pack(FrameType.CLOSE, 0) + bytes([reason]) + message.encode()
        case Hello(version, timestamp_ms, window, features, padding):
            return (
                _HEADER.pack(FrameType.HELLO, 0)
                + _HELLO.pack(version, timestamp_ms, window, features)
                + padding
            )
        case Welcome(version, window, features, padding):
            return (
                _HEADER.pack(FrameType.WELCOME, 0)
                + _WELCOME.pack(version, window, features)
                + padding
            )
    raise LocalProtocolError(f"not a frame: {frame!r}")  # pragma: no cover - exhaustive match


def encode_data(stream_id: int, data: Bytes) -> bytes:
    """Return the plaintext of ``Data(stream_id, data)`` without building the frame.

    The send path's shortcut: the caller has checked what ``Data`` checks (a live
    stream's id, 1 to MAX_DATA bytes).
    """
    return _HEADER.pack(_DATA, stream_id) + data


def decode_frame(plaintext: bytes) -> Frame:
    """Parse one record's plaintext, raising RemoteProtocolError if it is not a valid frame."""
    if len(plaintext) < FRAME_HEADER_SIZE:
        raise RemoteProtocolError(f"frame of {len(plaintext)} bytes is shorter than its header")
    kind, stream_id = _HEADER.unpack_from(plaintext)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise RemoteProtocolError(f"unknown frame type {kind:#04x}")
    if (stream_id == 0) != (kind in _SESSION_FRAMES):
        raise RemoteProtocolError(f"{FrameType(kind).name} frame on stream {stream_id}")
    try:
        return decoder(stream_id, plaintext[FRAME_HEADER_SIZE:])
    except LocalProtocolError as exc:  # a field the frame's own checks refuse
        raise RemoteProtocolError(f"malformed {FrameType(kind).name} frame: {exc}") from None


def _exact(payload: bytes, size: int, name: str) -> bytes:
    if len(payload) != size:
        raise RemoteProtocolError(f"{name} payload is {len(payload)} bytes, not {size}")
    return payload


def _empty(stream_id: int, payload: bytes, name: str) -> int:
    _exact(payload, 0, name)
    return stream_id


def _at_least(payload: bytes, size: int, name: str) -> bytes:
    if len(payload) < size:
        raise RemoteProtocolError(f"{name} payload is {len(payload)} bytes, under {size}")
    return payload


_Reason = TypeVar("_Reason", ResetReason, CloseReason)


def _reason_and_message(payload: bytes, enum: type[_Reason], name: str) -> tuple[_Reason, str]:
    _at_least(payload, 1, name)
    try:
        return enum(payload[0]), payload[1:].decode("utf-8")
    except ValueError as exc:  # unknown reason or bad utf-8
        raise RemoteProtocolError(f"malformed {name}: {exc}") from None


def _decode_hello(_: int, payload: bytes) -> Hello:
    version, timestamp_ms, window, features = _HELLO.unpack_from(
        _at_least(payload, _HELLO.size, "HELLO")
    )
    return Hello(version, timestamp_ms, window, features, payload[_HELLO.size :])


def _decode_welcome(_: int, payload: bytes) -> Welcome:
    version, window, features = _WELCOME.unpack_from(_at_least(payload, _WELCOME.size, "WELCOME"))
    return Welcome(version, window, features, payload[_WELCOME.size :])


def _decode_open(stream_id: int, payload: bytes) -> Open:
    target, size = decode_address(payload)
    return Open(stream_id, target, payload[size:])


def _decode_accept_bound(stream_id: int, payload: bytes) -> AcceptBound:
    bound, size = decode_address(payload)
    _exact(payload[size:], 0, "ACCEPT_BOUND trailer")
    return AcceptBound(stream_id, bound)


def _decode_datagram(stream_id: int, payload: bytes) -> Datagram:
    address, size = decode_address(payload)
    return Datagram(stream_id, address, payload[size:])


def _decode_reset(stream_id: int, payload: bytes) -> Reset:
    return Reset(stream_id, *_reason_and_message(payload, ResetReason, "RESET"))


def _decode_close(_: int, payload: bytes) -> Close:
    return Close(*_reason_and_message(payload, CloseReason, "CLOSE"))


_SESSION_FRAMES = frozenset(
    {FrameType.HELLO, FrameType.WELCOME, FrameType.PING, FrameType.PONG, FrameType.CLOSE}
)
_DECODERS: dict[int, Callable[[int, bytes], Frame]] = {
    FrameType.HELLO: _decode_hello,
    FrameType.WELCOME: _decode_welcome,
    FrameType.OPEN: _decode_open,
    FrameType.ACCEPT: lambda sid, payload: Accept(_empty(sid, payload, "ACCEPT")),
    FrameType.DATA: Data,
    FrameType.END: lambda sid, payload: End(_empty(sid, payload, "END")),
    FrameType.RESET: _decode_reset,
    FrameType.WINDOW: lambda sid, payload: Window(sid, *_U32.unpack(_exact(payload, 4, "WINDOW"))),
    FrameType.PING: lambda _, payload: Ping(_exact(payload, 8, "PING")),
    FrameType.PONG: lambda _, payload: Pong(_exact(payload, 8, "PONG")),
    FrameType.CLOSE: _decode_close,
    FrameType.ACCEPT_BOUND: _decode_accept_bound,
    FrameType.OPEN_FLOW: lambda sid, payload: OpenFlow(_empty(sid, payload, "OPEN_FLOW")),
    FrameType.DATAGRAM: _decode_datagram,
}
