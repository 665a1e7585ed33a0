"""Settings: the parsed command line, handed to every hook."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flyway_core.policy import Policy
from flyway_core.protocol import DEFAULT_WINDOW

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_WINDOW",
    "FrontDoorLimits",
    "ServerLimits",
    "Settings",
]

DEFAULT_PORT = 8100
DEFAULT_IDLE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How much one server takes on (``--max-sessions`` and friends); refusals are typed.

    A client keeps one session, and a browser behind it rarely holds more than a few
    hundred connections, so the defaults leave room for every honest use.
    """

    sessions: int = 4096  # sessions in all
    sessions_per_address: int = 1024  # sessions from one client address
    streams_per_session: int = 2048  # streams open at once in one session


@dataclass(frozen=True, slots=True)
class FrontDoorLimits:
    """How long the front door waits for a request, and how many connections it holds.

    The timeouts are nginx's stock ``client_header_timeout``, ``client_body_timeout``
    and ``keepalive_timeout``; they bound reading a request, never answering one.
    """

    header_timeout: float = 60.0  # seconds to send a request head (--header-timeout)
    body_timeout: float = 60.0  # seconds between two reads of a body (--body-timeout)
    keepalive_timeout: float = 75.0  # seconds an idle connection stays open
    max_connections: int = 4096  # connections at once (--max-connections)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the user asked for: shared options plus each plugin's own (``option()``)."""

    password: str = ""
    window: int = DEFAULT_WINDOW
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    cipher: str = "aes-256-gcm"
    verbosity: int = 0
    limits: ServerLimits = field(default_factory=ServerLimits)
    front_door: FrontDoorLimits = field(default_factory=FrontDoorLimits)
    policy: Policy = field(default_factory=Policy)  # which targets clients may reach
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any = None) -> Any:
        """Return a plugin option by its parameter name (``--ws-path`` is ``ws_path``)."""
        value = self.options.get(name.replace("-", "_").lstrip("_"), None)
        return default if value is None else value
