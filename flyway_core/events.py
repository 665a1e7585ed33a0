"""Events the core reports to ``on_event`` observers (console, logs, metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flyway_core.address import Address

__all__ = [
    "DialFailed",
    "Event",
    "Listening",
    "NotTunnelTraffic",
    "SessionDown",
    "SessionUp",
    "StreamDown",
    "StreamUp",
    "Traffic",
    "TunnelRejected",
]


@dataclass(frozen=True, slots=True)
class Listening:
    """Something bound a local address: the server's port or a client listener."""

    what: str
    address: Address


@dataclass(frozen=True, slots=True)
class SessionUp:
    """A session started (client: dialled; server: handshake accepted)."""

    session: str
    peer: str
    transport: str
    role: str


@dataclass(frozen=True, slots=True)
class SessionDown:
    """A session ended; ``error`` is a readable reason when it ended badly."""

    session: str
    peer: str
    error: str | None


@dataclass(frozen=True, slots=True)
class StreamUp:
    """A stream opened (client: local app connected; server: target dialled)."""

    session: str
    stream_id: int
    target: Address
    origin: str


@dataclass(frozen=True, slots=True)
class StreamDown:
    """A stream ended, with byte counts; ``error`` says why when it ended badly."""

    session: str
    stream_id: int
    target: Address
    sent: int
    received: int
    seconds: float
    error: str | None


@dataclass(frozen=True, slots=True)
class TunnelRejected:
    """The server turned away a request that tried to open a tunnel; it got the fallback."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotTunnelTraffic:
    """The front door answered a request that was not tunnel traffic, or dropped a connection.

    The fallback answered it, or nginx's error page did (malformed), or the
    connection was closed (too slow, no room). Consoles count these, not print them.
    """

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class DialFailed:
    """The client could not open a session; it tries again in ``retry_in`` seconds."""

    server: str
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Traffic:
    """Running totals, once a second while bytes move or streams open and close."""

    sent: int
    received: int
    streams: int
    sessions: int


Event = (
    Listening
    | SessionUp
    | SessionDown
    | StreamUp
    | StreamDown
    | TunnelRejected
    | NotTunnelTraffic
    | DialFailed
    | Traffic
)
