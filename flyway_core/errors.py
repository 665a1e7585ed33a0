"""The exception types flyway raises at its edges; the CLI turns each into one line.

The protocol's own errors (and the ``FlywayError`` base) live in
``flyway_core.protocol.errors``, so that the protocol imports nothing outside
itself; they are re-exported here with the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flyway_core.protocol.errors import (
    ConfigError,
    FlywayError,
    HandshakeRejected,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "CarrierClosed",
    "CarrierError",
    "ConfigError",
    "DialError",
    "FlywayError",
    "HandshakeRejected",
    "LocalProtocolError",
    "PluginError",
    "ProtocolError",
    "RemoteProtocolError",
    "TargetError",
    "TunnelRefused",
    "TunnelUnavailable",
    "StreamResetError",
    "describe_error",
    "map_errors",
]


class PluginError(FlywayError):
    """A plugin is broken: a duplicate key, an async hook implementation, an unknown hook."""


class CarrierError(FlywayError):
    """A carrier failed: it could not be dialled, or it broke while in use."""


class DialError(CarrierError):
    """The server could not be reached, or did not accept the tunnel."""


class CarrierClosed(CarrierError):
    """The carrier is gone; no more bytes will move over it."""


class TunnelUnavailable(CarrierError):
    """No session to the server is up right now, so a new stream cannot be opened."""


def describe_error(exc: BaseException) -> str:
    """Return one readable phrase for a library's exception, for a log line or a reset.

    An OS error gives its ``strerror`` (also when wrapped, as aiohttp's connector
    errors wrap it in ``os_error``), a bare timeout "timed out", anything else its
    message or, failing that, its type's name.
    """
    wrapped = getattr(exc, "os_error", None)
    if isinstance(wrapped, OSError):
        exc = wrapped
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__


@contextmanager
def map_errors(
    mapping: dict[type[BaseException], type[FlywayError]], message: str = ""
) -> Iterator[None]:
    """Re-raise library exceptions as our own types at a network boundary."""
    try:
        yield
    except FlywayError:
        raise
    except tuple(mapping) as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                detail = str(exc) or type(exc).__name__
                raise target(f"{message}: {detail}" if message else detail) from exc
        raise  # pragma: no cover - unreachable: the tuple matched one of the keys


class TargetError(FlywayError):
    """The server could not reach a stream's target; ``reason`` is the reset reason code."""

    def __init__(self, message: str, *, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class TunnelRefused(DialError):
    """The server answered but did not open a tunnel: a wrong password, or not flyway."""

    def __init__(self, server: str, detail: str = "") -> None:
        suffix = f"; {detail}" if detail else ""
        super().__init__(
            f"the server did not accept the tunnel (wrong password, or not a flyway server "
            f"at {server}){suffix}"
        )


class DatagramsUnsupported(FlywayError):
    """The server's session does not speak datagram flows (feature DATAGRAM_FLOWS)."""


class StreamResetError(FlywayError):
    """The peer reset a stream; ``reason`` is the reset reason code."""

    def __init__(self, message: str, *, reason: int) -> None:
        super().__init__(message)
        self.reason = reason
