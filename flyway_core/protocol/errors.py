"""The errors the protocol raises: its own, so that ``protocol/`` imports nothing outside itself.

``flyway_core.errors`` re-exports every one of them beside the errors of the rest of flyway.
A protocol error carries ``code``, the Close reason the session ends with (section 5 of
``docs/PROTOCOL.md``): the end that detects it sends Close with that code before it hangs up.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlywayError",
    "HandshakeRejected",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class FlywayError(Exception):
    """Base of every error flyway raises on purpose."""


class ConfigError(FlywayError):
    """The user asked for something that cannot work: a bad flag, address or option."""


class ProtocolError(FlywayError):
    """Something broke the wire protocol's rules; ``code`` is the Close reason to send."""

    code: int = 1  # CloseReason.PROTOCOL_ERROR

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (our bug or our caller's)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids: garbage, a forged record, a window overrun."""


class HandshakeRejected(RemoteProtocolError):
    """A client's first bytes did not open a session: wrong key, stale clock, replay, garbage."""
