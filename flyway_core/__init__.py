"""flyway: forward TCP connections through HTTP, WebSocket or KCP carriers."""

from __future__ import annotations

from flyway_core.address import Address, ServerURL
from flyway_core.errors import (
    CarrierClosed,
    CarrierError,
    ConfigError,
    DatagramsUnsupported,
    DialError,
    FlywayError,
    HandshakeRejected,
    LocalProtocolError,
    PluginError,
    ProtocolError,
    RemoteProtocolError,
    StreamResetError,
    TargetError,
    TunnelRefused,
    TunnelUnavailable,
    describe_error,
    map_errors,
)
from flyway_core.hookspecs import hookimpl
from flyway_core.link import take_buffered
from flyway_core.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Address",
    "CarrierClosed",
    "CarrierError",
    "ConfigError",
    "DatagramsUnsupported",
    "DialError",
    "FlywayError",
    "HandshakeRejected",
    "LocalProtocolError",
    "PluginError",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerURL",
    "Settings",
    "StreamResetError",
    "TargetError",
    "TunnelRefused",
    "TunnelUnavailable",
    "__version__",
    "describe_error",
    "hookimpl",
    "map_errors",
    "take_buffered",
]
