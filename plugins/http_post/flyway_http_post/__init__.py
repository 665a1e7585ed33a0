"""flyway transport ``http`` (the default): the tunnel as ordinary HTTP/1.1 POST requests.

Works through HTTP proxies that refuse CONNECT (absolute-form requests) and
through CDNs and reverse proxies that buffer request and response bodies.
"""

from __future__ import annotations

import click

from flyway_core import Settings, hookimpl
from flyway_http_post.limits import DEFAULT_BODY
from flyway_http_post.transport import HttpPostTransport

__all__ = ["HttpPostTransport"]


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["-U", "url_path"],
            metavar="PATH",
            help="Client: request path; {rand} becomes random hex per request (default /).",
        ),
        click.Option(
            ["-H", "http_headers"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Client: extra request header, repeatable (Host=cdn.example for fronting).",
        ),
        click.Option(
            ["--proxy", "http_proxy_url"],
            metavar="URL",
            help="Client: send requests through this HTTP proxy (else http_proxy from the "
            "environment); never uses CONNECT.",
        ),
        click.Option(
            ["--http-max-body"],
            type=int,
            default=DEFAULT_BODY,
            show_default=True,
            help="Largest request/response body in bytes, envelope included (nginx's stock "
            "limit; the client halves it when the path refuses bodies).",
        ),
        click.Option(
            ["--http-poll-timeout"],
            type=float,
            default=30.0,
            show_default=True,
            help="Seconds a long poll waits for data (keep under proxy read timeouts).",
        ),
    ]


@hookimpl
def register_transports(settings: Settings) -> list[HttpPostTransport]:
    return [HttpPostTransport.from_settings(settings)]
