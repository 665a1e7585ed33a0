"""TLS contexts from the command line: ``--cert/--key`` (server), ``--ca``, ``--insecure``."""

from __future__ import annotations

import ssl

from flyway_core.errors import ConfigError
from flyway_core.settings import Settings

__all__ = ["client_ssl", "server_ssl"]


def server_ssl(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP."""
    cert, key = settings.option("cert"), settings.option("key")
    if not cert and not key:
        return None
    if not cert:
        raise ConfigError("--key needs --cert")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--cert {cert}: {exc}") from exc
    return context


def client_ssl(settings: Settings) -> ssl.SSLContext | bool:
    """How a client checks an ``https://`` server: a context, or False with --insecure."""
    if settings.option("insecure", False):
        return False
    ca = settings.option("ca")
    try:
        return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--ca {ca}: {exc}") from exc
