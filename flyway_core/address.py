"""Host-and-port values: where a stream goes, where a listener binds, where the server is."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flyway_core.errors import ConfigError

__all__ = ["Address", "ServerURL", "split_host_port"]


@dataclass(frozen=True, slots=True)
class Address:
    """A host (domain name, IPv4 or IPv6 literal) and a TCP port."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range (0-65535)")

    @classmethod
    def parse(
        cls, text: str, *, default_host: str = "", default_port: int | None = None
    ) -> Address:
        """Parse ``host:port``, ``[v6]:port``, ``:port`` or (with a default port) ``host``."""
        host, port = split_host_port(text, default_port=default_port)
        return cls(host or default_host, port)

    @property
    def is_ip(self) -> bool:
        """True when the host is an IP literal rather than a name."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def split_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 in brackets) into its parts, checking the port."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{text!r}: missing ']' after IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{text!r}: expected ':port' after ']'")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ConfigError(f"{text!r}: put an IPv6 address in brackets, like [::1]:8100")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ConfigError(f"{text!r}: missing port")
        return host, default_port
    if not port_text.isdigit():
        raise ConfigError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{text!r}: port {port} is out of range (0-65535)")
    return host, port


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
