"""A real browser: headless Chromium loads a page with sub-resources through a -D port.

The page lives at ``page.test``, a name that only the tunnel's server side knows (a test
dialer sends it to a local web server), so Chromium cannot have fetched it directly: every
request that arrived both names ``page.test`` and was dialled by the flyway server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from flyway_core import Address, Settings, hookimpl
from flyway_core.direct import DirectDialer
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.testing import joined_tunnel, listening
from flyway_core.testing.sites import web_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE_HOST = "page.test"
IMAGES = 4


def _png(red: int, green: int, blue: int) -> bytes:
    """A 1x1 PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, green, blue]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNGS = [_png(40 * i, 255 - 40 * i, 7) for i in range(IMAGES)]
INDEX = f"""<!doctype html>
<html><head><title>flyway</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
</head><body>
{"".join(f'<img src="/img/{i}.png" alt="{i}">' for i in range(IMAGES))}
<p id="text">hello through the tunnel</p>
</body></html>
"""
STYLE = "#text { color: rgb(1, 2, 3); }\n"
# Runs once everything loaded: counts the images that decoded and checks the CSS applied.
SCRIPT = """
window.addEventListener("load", () => {
  const ok = [...document.images].filter((i) => i.complete && i.naturalWidth === 1).length;
  const color = getComputedStyle(document.getElementById("text")).color;
  const marker = document.createElement("div");
  marker.id = "marker";
  marker.textContent = `loaded images=${ok} color=${color}`;
  document.body.appendChild(marker);
});
"""
MARKER = f'<div id="marker">loaded images={IMAGES} color=rgb(1, 2, 3)</div>'
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--proxy-bypass-list=<-loopback>",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-extensions",
    "--virtual-time-budget=10000",  # --dump-dom waits for the load handlers and requests
    "--dump-dom",
]


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    """Skip without Chromium, except under CI (``CI`` set): there a missing one fails."""
    if CHROMIUM is None:
        why = "chromium is not installed (scripts/test installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run this test", pytrace=False)
        pytest.skip(why)


class PageDialer:
    """Server side: dial ``page.test`` at the local web server, count every dial."""

    def __init__(self, web_port: int) -> None:
        self.web = Address("127.0.0.1", web_port)
        self.dials = 0

    @hookimpl
    def dial_upstream(self, target: Address, settings: Settings) -> PageDialer | None:
        return self if target.host == PAGE_HOST else None

    async def connect(self, target: Address, protocol: asyncio.Protocol) -> None:
        self.dials += 1
        await DirectDialer().connect(Address(self.web.host, target.port), protocol)


@pytest.fixture
async def page_server() -> AsyncIterator[tuple[int, list[tuple[str, str]]]]:
    """The web server (127.0.0.1, a free port) and the Host header of each request."""
    seen: list[tuple[str, str]] = []

    def answer(body: bytes | str, content_type: str) -> web.Response:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(body=data, content_type=content_type)

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.host, request.path))
        path = request.path
        if path == "/":
            return answer(INDEX, "text/html")
        if path == "/style.css":
            return answer(STYLE, "text/css")
        if path == "/app.js":
            return answer(SCRIPT, "application/javascript")
        if path.startswith("/img/"):
            return answer(PNGS[int(path[5:].removesuffix(".png"))], "image/png")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with web_site(app) as port:
        yield port, seen


async def _proxy(
    settings: Settings, dialer: PageDialer, stack: contextlib.AsyncExitStack
) -> Address:
    from flyway_socks5 import Socks5Listener

    pm = make_plugin_manager(entry_points=False)
    pm.register(dialer, name="page")
    tunnel = await stack.enter_async_context(joined_tunnel(settings, Plugins(pm)))
    listener = Socks5Listener(Address("127.0.0.1", 0), None, 5.0)
    return await stack.enter_async_context(listening(listener, tunnel))


async def test_chromium_loads_a_whole_page_through_dash_d(
    settings: Settings, page_server: tuple[int, list[tuple[str, str]]]
) -> None:
    web_port, seen = page_server
    dialer = PageDialer(web_port)
    async with contextlib.AsyncExitStack() as stack:
        proxy = await _proxy(settings, dialer, stack)
        profile = stack.enter_context(tempfile.TemporaryDirectory(prefix="flyway-chromium-"))
        assert CHROMIUM is not None
        browser = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--proxy-server=socks5://{proxy.host}:{proxy.port}",
            f"--user-data-dir={profile}",
            f"http://{PAGE_HOST}:{web_port}/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                out, err = await browser.communicate()
        finally:
            if browser.returncode is None:
                browser.kill()
                await browser.wait()
    dom = out.decode(errors="replace")
    assert browser.returncode == 0, err.decode(errors="replace")[-2000:]
    assert MARKER in dom, dom[-2000:]
    assert "hello through the tunnel" in dom
    # Every request came by name through the tunnel: the page, the CSS, the script and
    # each image (a favicon request may come too), each on a connection flyway dialled.
    paths = {path for _, path in seen}
    wanted = {"/", "/style.css", "/app.js", *(f"/img/{i}.png" for i in range(IMAGES))}
    assert wanted <= paths, seen
    assert {host for host, _ in seen} == {f"{PAGE_HOST}:{web_port}"}, seen
    assert dialer.dials >= 1
