"""Per-stream state: each direction's lifecycle as a transition table, and its flow control.

Theory of operation
===================

A stream carries bytes both ways, and each direction (a "half") ends on its own, so a stream's
state is a pair: the half we send on and the half we receive on. A half moves through::

    PENDING --Accept (or AcceptBound)--> OPEN --Data--> OPEN --End--> ENDED

Only the server-to-client half starts PENDING: the server Accepts (it reached the target)
before it may send Data or End, and the client learns that its open succeeded when the Accept
arrives. The client-to-server half starts OPEN, because the client may send at once (the Open
frame itself may carry the first bytes, and Data may follow before the Accept).

Reset is not in the table: either side may send it in any state, it ends both halves, and the
stream is forgotten at once. A stream is also forgotten when both halves are ENDED. Frames that
arrive for a forgotten stream are legal races (the peer sent them before it saw our Reset or
End) and the connection drops them. Any (state, frame type) pair missing from ``_TRANSITIONS``
is a protocol error: LocalProtocolError if we tried it, RemoteProtocolError if the peer did.

Flow control
------------

Each half has a window ``W``, the receiver's per-stream window from its Hello or Welcome. The
sender holds ``credit``: Data bytes (and an Open's initial data) spend it, Window frames give it
back. The receiver counts ``buffered`` (received, not yet consumed by the application) and
``unannounced`` (consumed, not yet returned in a Window frame). The sender's credit is always
``W - buffered - unannounced``, so bytes beyond that are a flow-control violation, and a Window
frame that would lift the credit above ``W`` returns bytes never sent: also a violation. The
receiver returns consumed bytes in one Window frame once ``W // 4`` have accumulated, which
keeps Window frames rare while leaving the sender at least three quarters of its window.
"""

from __future__ import annotations

from enum import Enum

from flyway_core.protocol.constants import CloseReason, FrameType
from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HalfState", "StreamState"]


class HalfState(Enum):
    """Where one direction of a stream is in its life."""

    PENDING = "pending"  # server to client, before Accept
    OPEN = "open"
    ENDED = "ended"


PENDING, OPEN, ENDED = HalfState.PENDING, HalfState.OPEN, HalfState.ENDED

_TRANSITIONS: dict[tuple[HalfState, FrameType], HalfState] = {
    (PENDING, FrameType.ACCEPT): OPEN,
    (PENDING, FrameType.ACCEPT_BOUND): OPEN,  # Accept, naming the server's local address
    (OPEN, FrameType.DATA): OPEN,
    (OPEN, FrameType.DATAGRAM): OPEN,  # flows only (``StreamState.flow``)
    (OPEN, FrameType.END): ENDED,
}


class StreamState:
    """One stream's two halves and its flow-control counters (mutable, owned by a connection)."""

    __slots__ = (
        "buffered",
        "credit",
        "flow",
        "receiving",
        "sending",
        "stream_id",
        "unannounced",
    )

    def __init__(
        self,
        stream_id: int,
        *,
        sending: HalfState,
        receiving: HalfState,
        credit: int,
        flow: bool = False,
    ) -> None:
        self.stream_id = stream_id
        self.flow = flow  # a datagram flow: Datagram frames, never Data or Window
        self.sending = sending
        self.receiving = receiving
        self.credit = credit  # bytes we may still send
        self.buffered = 0  # bytes received that the application has not acknowledged
        self.unannounced = 0  # bytes acknowledged but not yet returned in a Window frame

    def __repr__(self) -> str:
        return (
            f"<StreamState {self.stream_id} send={self.sending.value} recv={self.receiving.value}"
            f" credit={self.credit} buffered={self.buffered}>"
        )

    @property
    def finished(self) -> bool:
        """True when both halves have ended: the stream can be forgotten."""
        return self.sending is ENDED and self.receiving is ENDED

    @property
    def name(self) -> str:
        """``stream 5`` or ``flow 5``, for messages."""
        return f"{'flow' if self.flow else 'stream'} {self.stream_id}"

    def can_send(self, frame_type: FrameType) -> bool:
        """Whether our half may send a frame of ``frame_type`` now."""
        return (self.sending, frame_type) in _TRANSITIONS and self._carries(frame_type)

    def _carries(self, frame_type: FrameType) -> bool:
        """Data and Window belong to byte streams, Datagram to flows; the rest to both."""
        if frame_type is FrameType.DATAGRAM:
            return self.flow
        return not (self.flow and frame_type in (FrameType.DATA, FrameType.WINDOW))

    def send(self, frame_type: FrameType) -> None:
        """Move our half as sending ``frame_type`` does, or raise LocalProtocolError."""
        state = _TRANSITIONS.get((self.sending, frame_type))
        if state is None or not self._carries(frame_type):
            raise LocalProtocolError(
                f"cannot send {frame_type.name} on {self.name}: our side is {self.sending.value}"
            )
        self.sending = state

    def receive(self, frame_type: FrameType) -> None:
        """Move the peer's half as receiving ``frame_type`` does, or raise RemoteProtocolError."""
        state = _TRANSITIONS.get((self.receiving, frame_type))
        if state is None or not self._carries(frame_type):
            raise RemoteProtocolError(
                f"peer sent {frame_type.name} on {self.name}: its side is {self.receiving.value}"
            )
        self.receiving = state

    def spend(self, size: int) -> None:
        """Take ``size`` bytes of send credit, or raise LocalProtocolError if it is short."""
        if size > self.credit:
            raise LocalProtocolError(
                f"{size} bytes exceed stream {self.stream_id}'s send window of {self.credit}"
            )
        self.credit -= size

    def grant(self, increment: int, window: int) -> None:
        """Add a Window frame's ``increment`` to our credit, which may never pass ``window``."""
        if self.credit + increment > window:
            raise RemoteProtocolError(
                f"window update on stream {self.stream_id} returns bytes never sent",
                code=CloseReason.FLOW_CONTROL,
            )
        self.credit += increment

    def take(self, size: int, window: int) -> None:
        """Count ``size`` received bytes; RemoteProtocolError if the peer overran ``window``."""
        if self.buffered + self.unannounced + size > window:
            raise RemoteProtocolError(
                f"peer overran stream {self.stream_id}'s window of {window} bytes",
                code=CloseReason.FLOW_CONTROL,
            )
        self.buffered += size

    def consume(self, size: int, window: int) -> int:
        """Count ``size`` bytes as consumed; return the increment to announce now (or 0)."""
        if not 0 <= size <= self.buffered:
            raise LocalProtocolError(
                f"cannot acknowledge {size} bytes on stream {self.stream_id}:"
                f" {self.buffered} are buffered"
            )
        self.buffered -= size
        self.unannounced += size
        if self.receiving is ENDED or self.unannounced < max(1, window // 4):
            return 0  # the peer sends no more, or not enough to be worth a frame yet
        increment, self.unannounced = self.unannounced, 0
        return increment
