"""Host-and-port values: where a stream goes, where a listener binds, where the server is.

``Address`` belongs to the wire protocol (``flyway_core.protocol.address``) and is
re-exported here; ``ServerURL`` is the client's name for its server.
"""

from __future__ import annotations

from dataclasses import dataclass

from flyway_core.protocol.address import Address, split_host_port
from flyway_core.protocol.errors import ConfigError

__all__ = ["Address", "ServerURL", "split_host_port"]


@dataclass(frozen=True, slots=True)
class ServerURL:
    """Where a client finds the server: scheme (http or https), host, port and base path."""

    scheme: str
    host: str
    port: int
    path: str = "/"

    @classmethod
    def parse(cls, text: str, *, default_port: int) -> ServerURL:
        """Parse ``host:port``, ``http://host:port/path`` or ``https://host``."""
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "http", text
        scheme = scheme.lower()
        if scheme in ("ws", "wss"):
            scheme = "http" if scheme == "ws" else "https"
        if scheme not in ("http", "https"):
            raise ConfigError(f"{text!r}: the server URL must be http:// or https://")
        hostport, slash, path = rest.partition("/")
        fallback_port = default_port if scheme == "http" and not sep else None
        if fallback_port is None:
            fallback_port = 443 if scheme == "https" else 80 if sep else default_port
        host, port = split_host_port(hostport, default_port=fallback_port)
        if not host:
            raise ConfigError(f"{text!r}: the server address needs a host")
        return cls(scheme, host, port, "/" + path if slash else "/")

    @property
    def address(self) -> Address:
        """The host and port to connect to."""
        return Address(self.host, self.port)

    def url(self, path: str | None = None) -> str:
        """Return the absolute URL of ``path`` (default: the base path) on this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path if path is not None else self.path}"

    def __str__(self) -> str:
        return self.url()
