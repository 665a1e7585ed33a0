"""Parse ``-D [USER:PASS@][BIND:]PORT`` and the credentials that go with it."""

from __future__ import annotations

from flyway_core import Address, ConfigError
from flyway_socks5.base import Credentials
from flyway_socks5.listener import Socks5Listener

__all__ = [
    "AUTH_ENV",
    "DEFAULT_BIND",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "parse_credentials",
    "parse_rule",
]

AUTH_ENV = "FLYWAY_SOCKS_AUTH"
DEFAULT_BIND = "127.0.0.1"
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def parse_credentials(text: str, where: str) -> Credentials:
    """Parse ``USER:PASS`` (each 1-255 bytes, RFC 1929's limits)."""
    user, colon, password = text.partition(":")
    raw_user, raw_password = user.encode(), password.encode()
    if not colon or not 0 < len(raw_user) <= 255 or not 0 < len(raw_password) <= 255:
        raise ConfigError(f"{where}: credentials must be USER:PASS, each 1-255 bytes")
    return Credentials(raw_user, raw_password)


def parse_rule(
    rule: str,
    *,
    default_auth: str | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> Socks5Listener:
    """Parse one ``-D`` value; ConfigError says what is wrong with it (never the password)."""
    auth, at, where = rule.strip().rpartition("@")
    credentials = None
    if at:
        credentials = parse_credentials(auth, f"-D ...@{where}")
    elif default_auth:
        credentials = parse_credentials(default_auth, AUTH_ENV)
    if where.isdigit():
        where = f":{where}"
    try:
        bind = Address.parse(where, default_host=DEFAULT_BIND)
    except ConfigError as exc:
        raise ConfigError(f"-D {where}: expected [USER:PASS@][BIND:]PORT ({exc})") from None
    if bind.port == 0:
        raise ConfigError(f"-D {where}: the port must be 1-65535")
    return Socks5Listener(bind, credentials, handshake_timeout)
