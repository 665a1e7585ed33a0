"""The ``http`` transport: dials with aiohttp (proxy, TLS, headers); serves on the front door."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp

from flyway_core import ConfigError, ServerURL, Settings
from flyway_core.interfaces import FrontDoor, Transport
from flyway_core.protocol import derive_master_key
from flyway_http_post.client import HttpPostCarrier, http_client, open_carrier
from flyway_http_post.envelope import EnvelopeKeys
from flyway_http_post.limits import DEFAULT_BODY, MAX_BODY, MIN_BODY, Limits
from flyway_http_post.server import HttpPostServer

__all__ = ["HttpPostTransport", "parse_headers"]

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def parse_headers(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``-H key=value`` (or ``key: value``) options."""
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            key, sep, value = pair.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"-H {pair}: expected KEY=VALUE")
        headers[key.strip()] = value.strip()
    return headers


class HttpPostTransport(Transport):
    """Client and server sides of the POST carrier."""

    name = "http"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        path: str = "/",
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.path = path if path.startswith("/") else "/" + path
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self.proxy = proxy
        self.server: HttpPostServer | None = None  # the server side, once serving

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpPostTransport:
        limits = Limits(
            max_body=settings.option("http_max_body", DEFAULT_BODY),
            poll_timeout=settings.option("http_poll_timeout", 30.0),
        )
        if not MIN_BODY <= limits.max_body <= MAX_BODY:
            raise ConfigError(f"--http-max-body must be between {MIN_BODY} and {MAX_BODY}")
        return cls(
            limits,
            path=settings.option("url_path") or "/",
            headers=parse_headers(settings.option("http_headers", ())),
            proxy=settings.option("http_proxy_url"),
        )

    def request_url(self, server: ServerURL) -> str:
        """The URL of one request to ``server`` (``-U`` applied, {rand} filled in)."""
        path = self.path.replace("{rand}", os.urandom(4).hex())
        base = server.path.rstrip("/") if server.path != "/" else ""
        return server.url(base + path)

    async def dial(self, server: ServerURL, hello: bytes, settings: Settings) -> HttpPostCarrier:
        keys = EnvelopeKeys(derive_master_key(settings.password))
        http = http_client(server, settings, proxy=self.proxy)  # one cookie jar per session

        def post(
            body: bytes, timeout: float
        ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
            return http.post(
                self.request_url(server),
                data=body,
                headers=self.headers,
                proxy=self.proxy,
                timeout=aiohttp.ClientTimeout(total=timeout),
            )

        try:
            carrier = await open_carrier(post, keys, self.limits, hello, str(server))
        except BaseException:
            await http.close()
            raise
        carrier.cleanup = http.close
        return carrier

    def serve(self, door: FrontDoor) -> contextlib.AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def serving() -> AsyncIterator[None]:
            keys = EnvelopeKeys(derive_master_key(door.settings.password))
            server = self.server = HttpPostServer(door, keys, self.limits)
            door.add_handler(server.handle)
            async with server.running():
                yield

        return serving()
