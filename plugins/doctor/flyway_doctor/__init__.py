"""flyway plugin ``doctor``: ``flyway doctor URL``, a self-test of the path to a server.

It measures what every transport depends on, through the user's proxy or CDN
(a WebSocket upgrade, streamed responses, the largest body, idle survival, the
round trip), and recommends a transport, option values and the command to run.
HTTP POST is asked with its own PING envelopes (``flyway-http-post``); the
``ws`` transport, when installed, is found through the plugin manager.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict

import click
from flyway_http_post.envelope import MAX_HOLD_MS
from flyway_http_post.transport import HttpPostTransport

from flyway_core import ConfigError, FlywayError, ServerURL, Settings, hookimpl
from flyway_core.plugins import Plugins
from flyway_core.settings import DEFAULT_PORT
from flyway_doctor.advice import advise, show
from flyway_doctor.probes import measure

__all__ = ["advise", "measure"]


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command(name="doctor")
    @click.argument("url")
    @click.option("-p", "--password", envvar="FLYWAY_PASSWORD", help="Shared password.")
    @click.option("--proxy", metavar="URL", help="Through this HTTP proxy (as the client would).")
    @click.option("-H", "headers", multiple=True, metavar="KEY=VALUE", help="Extra header.")
    @click.option("-U", "url_path", metavar="PATH", help="Request path (as the client's -U).")
    @click.option("--ca", metavar="FILE", help="Trust this CA for an https:// server.")
    @click.option("--insecure", is_flag=True, help="Do not verify an https:// server.")
    @click.option(
        "--max-idle",
        type=click.FloatRange(1, MAX_HOLD_MS / 1000),
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help="Longest idle request to try.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable keys).")
    def doctor(
        url: str,
        password: str | None,
        proxy: str | None,
        headers: tuple[str, ...],
        url_path: str | None,
        ca: str | None,
        insecure: bool,
        max_idle: float,
        as_json: bool,
    ) -> None:
        """Measure what the path to a flyway server passes; recommend transport and settings."""
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True, highlight=False, soft_wrap=True)
        passthrough = [
            *(["--proxy", proxy] if proxy else []),
            *(a for h in headers for a in ("-H", h)),
        ]
        passthrough += ["-U", url_path] if url_path else []
        tls = [*(["--ca", ca] if ca else []), *(["--insecure"] if insecure else [])]
        options = {"http_proxy_url": proxy, "http_headers": headers, "url_path": url_path}
        settings = Settings(
            password=password or "", options={**options, "ca": ca, "insecure": insecure}
        )
        try:
            if not password:
                raise ConfigError("a password is needed: -p PASSWORD or FLYWAY_PASSWORD")
            server = ServerURL.parse(url, default_port=DEFAULT_PORT)
            transport = HttpPostTransport.from_settings(settings)
            plugins = click.get_current_context().find_object(Plugins)  # the group's ctx.obj
            websocket = plugins.transports(settings).get("ws") if plugins is not None else None
            with err.status(f"flyway doctor: measuring {server} (up to {max_idle:g} s)"):
                found = asyncio.run(
                    measure(server, settings, transport, websocket, max_idle=max_idle)
                )
        except FlywayError as exc:
            err.print(f"[bold red]flyway:[/] {escape(str(exc))}")
            sys.exit(2 if isinstance(exc, ConfigError) else 1)
        advice = advise(found, url, passthrough, tls)
        if as_json:
            click.echo(json.dumps({**asdict(found), "recommendation": asdict(advice)}, indent=2))
        else:
            show(found, advice)
