"""flyway plugin ``reverse_proxy``: ``-P http(s)://host:port[/prefix]`` puts a site on the port.

Options: ``--reverse-proxy-host client|upstream`` (the ``Host`` the site gets:
the client's, the default, or the one in ``-P``), ``--reverse-proxy-timeout S``
(connect and read, default 60, nginx's), ``--reverse-proxy-connections N``
(connections to the site at once, default 8; more requests wait, ``timeout`` at
most, then get a 504), ``--reverse-proxy-send-timeout S`` (a client that takes
nothing of its answer this long is closed, default 60, nginx's),
``--reverse-proxy-verify`` (verify an ``https://`` site's certificate against the
system's CAs; off by default, as nginx's ``proxy_ssl_verify``). See
``proxy.py`` for how it works.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import click

from flyway_core import hookimpl
from flyway_fallback.reverse_proxy.proxy import (
    POOL_SIZE,
    SEND_TIMEOUT,
    ReverseProxyFallback,
    Upstream,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from flyway_core import Settings

__all__ = ["ReverseProxyFallback", "Upstream"]

_MADE: weakref.WeakSet[ReverseProxyFallback] = weakref.WeakSet()


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["--reverse-proxy-host"],
            type=click.Choice(["client", "upstream"]),
            default="client",
            show_default=True,
            help="Server, -P http://: the Host header the site gets (the client's, or -P's).",
        ),
        click.Option(
            ["--reverse-proxy-timeout"],
            type=click.FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            metavar="S",
            help="Server, -P http://: seconds to connect to the site and between its reads.",
        ),
        click.Option(
            ["--reverse-proxy-connections"],
            type=click.IntRange(min=1),
            default=POOL_SIZE,
            show_default=True,
            metavar="N",
            help="Server, -P http://: connections to the site at once (more requests wait, "
            "--reverse-proxy-timeout at most, so the site's visitors cannot crowd out the tunnel).",
        ),
        click.Option(
            ["--reverse-proxy-send-timeout"],
            type=click.FloatRange(min=0.1),
            default=SEND_TIMEOUT,
            show_default=True,
            metavar="S",
            help="Server, -P http://: close a client that takes nothing of its answer this long "
            "(nginx's send_timeout), which frees its connection to the site.",
        ),
        click.Option(
            ["--reverse-proxy-verify"],
            is_flag=True,
            default=False,
            help="Server, -P https://: verify the site's certificate against the system's CAs "
            "(off by default, as nginx's proxy_ssl_verify: a self-signed site works).",
        ),
    ]


@hookimpl
def fallback_for(spec: str | None, settings: Settings) -> ReverseProxyFallback | None:
    if spec is None or not spec.lower().startswith(("http://", "https://")):
        return None
    fallback = ReverseProxyFallback(
        Upstream(spec),
        use_upstream_host=settings.option("reverse_proxy_host", "client") == "upstream",
        timeout=float(settings.option("reverse_proxy_timeout", 60.0)),
        connections=int(settings.option("reverse_proxy_connections", POOL_SIZE)),
        send_timeout=float(settings.option("reverse_proxy_send_timeout", SEND_TIMEOUT)),
        verify=bool(settings.option("reverse_proxy_verify", False)),
    )
    _MADE.add(fallback)
    return fallback


@hookimpl
def lifespan(settings: Settings) -> AbstractAsyncContextManager[None]:
    return _closing_pools()


@contextlib.asynccontextmanager
async def _closing_pools() -> AsyncIterator[None]:
    """Close the upstream connection pools when flyway stops."""
    try:
        yield
    finally:
        for fallback in list(_MADE):
            await fallback.close()
