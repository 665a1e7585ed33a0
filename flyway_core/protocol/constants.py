"""Numbers and names the protocol fixes: version, windows, limits, frame types and reasons."""

from __future__ import annotations

from enum import IntEnum, IntFlag

from flyway_core.protocol.records import MAX_PLAINTEXT

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_WINDOW",
    "FRAME_HEADER_SIZE",
    "INITIAL_WINDOW",
    "MAX_DATA",
    "MAX_MESSAGE",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "PROTOCOL_VERSION",
    "FRAME_FEATURES",
    "SUPPORTED_FEATURES",
    "CloseReason",
    "Feature",
    "FrameType",
    "ResetReason",
]

PROTOCOL_VERSION = 1
DEFAULT_WINDOW = 1 << 20
MIN_WINDOW = 65536
MAX_WINDOW = 2**31 - 1
INITIAL_WINDOW = 65536  # the credit a client assumes per stream until Welcome names the real one
CLOCK_SKEW = 120.0  # seconds a Hello's timestamp may differ from the server's clock
FRAME_HEADER_SIZE = 5
MAX_DATA = MAX_PLAINTEXT - FRAME_HEADER_SIZE
MAX_MESSAGE = 200  # utf-8 bytes of a Reset or Close message
MAX_STREAM_ID = 2**32 - 1


class FrameType(IntEnum):
    """The first byte of every frame."""

    HELLO = 0x01
    WELCOME = 0x02
    OPEN = 0x03
    ACCEPT = 0x04
    DATA = 0x05
    END = 0x06
    RESET = 0x07
    WINDOW = 0x08
    PING = 0x09
    PONG = 0x0A
    CLOSE = 0x0B
    ACCEPT_BOUND = 0x0C
    OPEN_FLOW = 0x0D
    DATAGRAM = 0x0E


class Feature(IntFlag):
    """Optional parts of the protocol, advertised in Hello and Welcome as a u32 of bits.

    A session uses a feature only when both ends advertised it, and each end sends a
    feature's frames only then (``FRAME_FEATURES``); bits an end does not know are
    ignored, so a new feature needs no version bump.
    """

    NONE = 0
    BOUND_ADDRESS = 1  # the server's Accept names its local address toward the target
    DATAGRAM_FLOWS = 2  # flows of addressed datagrams beside the streams (SOCKS5 UDP)


# Every feature this implementation speaks: what the core advertises in Hello and Welcome.
SUPPORTED_FEATURES = Feature.BOUND_ADDRESS | Feature.DATAGRAM_FLOWS


# Frames that belong to an optional feature: sent only when both ends advertised it, and
# a protocol error when received otherwise. Every other frame of version 1 is mandatory.
FRAME_FEATURES: dict[int, Feature] = {
    FrameType.ACCEPT_BOUND: Feature.BOUND_ADDRESS,
    FrameType.OPEN_FLOW: Feature.DATAGRAM_FLOWS,
    FrameType.DATAGRAM: Feature.DATAGRAM_FLOWS,
}


class ResetReason(IntEnum):
    """Why a stream was reset; 1-5 and 11 are a failed open's answer (SOCKS5 maps them)."""

    REFUSED = 1
    UNREACHABLE = 2
    NAME_NOT_FOUND = 3
    TIMED_OUT = 4
    NOT_ALLOWED = 5
    INTERNAL = 6
    CANCELLED = 7
    PROTOCOL_ERROR = 8
    FLOW_CONTROL = 9
    BUSY = 10
    NETWORK_UNREACHABLE = 11  # a failed open, as UNREACHABLE: no route to the network

    def describe(self) -> str:
        """Return a short human text, such as ``connection refused``."""
        return _RESET_TEXT[self]


_RESET_TEXT = {
    ResetReason.REFUSED: "connection refused",
    ResetReason.UNREACHABLE: "host unreachable",
    ResetReason.NAME_NOT_FOUND: "name not found",
    ResetReason.TIMED_OUT: "timed out",
    ResetReason.NOT_ALLOWED: "not allowed",
    ResetReason.INTERNAL: "internal error",
    ResetReason.CANCELLED: "cancelled",
    ResetReason.PROTOCOL_ERROR: "protocol error",
    ResetReason.FLOW_CONTROL: "flow control violation",
    ResetReason.BUSY: "busy",
    ResetReason.NETWORK_UNREACHABLE: "network unreachable",
}


class CloseReason(IntEnum):
    """Why a session ended."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    IDLE_TIMEOUT = 2
    SHUTDOWN = 3
    FLOW_CONTROL = 4
    BUSY = 5

    def describe(self) -> str:
        """Return a short human text, such as ``idle timeout``."""
        return self.name.lower().replace("_", " ")
