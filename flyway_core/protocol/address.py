"""Host-and-port values: where a stream goes, and the ``host:port`` syntax that names one."""

from __future__ import annotations

from dataclasses import dataclass

from flyway_core.protocol.errors import ConfigError

__all__ = ["Address", "split_host_port"]


@dataclass(frozen=True, slots=True)
class Address:
    """A host (domain name, IPv4 or IPv6 literal) and a TCP or UDP port."""

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
