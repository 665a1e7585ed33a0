"""flyway-socks5: ``-D [USER:PASS@][BIND:]PORT``, a SOCKS5, SOCKS4a and HTTP proxy on one port.

Only hook implementations live here; the listener is in ``listener``, one module
per protocol beside it (``socks5``, ``socks4``, ``httpproxy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from flyway_core import hookimpl
from flyway_socks5.config import AUTH_ENV, DEFAULT_HANDSHAKE_TIMEOUT, parse_rule
from flyway_socks5.listener import Socks5Listener

if TYPE_CHECKING:
    from flyway_core import Settings

__all__ = ["Socks5Listener", "add_options", "parse_rule", "register_listeners"]


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["-D", "socks5"],
            multiple=True,
            metavar="[USER:PASS@][BIND:]PORT",
            help="Serve SOCKS5, SOCKS4a and an HTTP proxy on PORT (bind 127.0.0.1 unless "
            "BIND is given); targets are reached, and names resolved, by the server "
            "(repeatable).",
        ),
        click.Option(
            ["--socks5-auth"],
            metavar="USER:PASS",
            envvar=AUTH_ENV,
            show_envvar=True,
            help="Require these credentials on every -D port that names none itself.",
        ),
        click.Option(
            ["--socks5-handshake-timeout"],
            type=float,
            default=DEFAULT_HANDSHAKE_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="Close a -D client whose handshake or request head takes longer.",
        ),
    ]


@hookimpl
def register_listeners(settings: Settings) -> list[Socks5Listener]:
    auth = settings.option("socks5_auth")
    timeout = float(settings.option("socks5_handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT))
    return [
        parse_rule(rule, default_auth=auth, handshake_timeout=timeout)
        for rule in settings.option("socks5", default=())
    ]
