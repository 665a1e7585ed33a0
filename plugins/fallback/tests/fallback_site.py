"""What flyway-fallback's tests share: a site's files, and flyway in front of it.

``make_site(root)`` fills a directory as a small site; ``door(spec)`` runs a flyway
server with every installed transport and the fallback for ``-P spec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from flyway_core import Address, Settings
from flyway_core.events import Event
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.server import FlywayServer

PASSWORD = "fallback test password"
Door = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FlywayServer, Address]]]


def make_site(root: Path) -> Path:
    """Fill ``root`` with what a small site has: pages, assets, a big file, directories."""
    rng = random.Random(12)
    page = "<html><body><h1>Welcome</h1>" + "x" * 600 + "</body></html>\n"
    (root / "index.html").write_text(page)
    (root / "1k.bin").write_bytes(rng.randbytes(1024))
    (root / "small.txt").write_text("hello, world\n")
    (root / "style.css").write_text("body { color: #333; }\n" * 20)
    (root / "app.js").write_text("console.log('hi');\n" * 10)
    (root / "image.png").write_bytes(rng.randbytes(3000))
    (root / "big.bin").write_bytes(rng.randbytes(2 << 20))
    (root / "space name.txt").write_text("a file with a space\n")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("<html><body>docs</body></html>\n")
    (root / "docs" / "a.txt").write_text("docs a\n")
    (root / "empty").mkdir()
    (root / "listing").mkdir()
    for name in ("b.txt", "a.txt", "sub"):
        if name == "sub":
            (root / "listing" / name).mkdir()
        else:
            (root / "listing" / name).write_text(name * 10)
    os.utime(root / "index.html", (1_700_000_000, 1_700_000_000))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@contextlib.asynccontextmanager
async def door(
    spec: str | None,
    events: list[Event] | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> AsyncIterator[tuple[FlywayServer, Address]]:
    """A flyway server on 127.0.0.1 with every installed transport and ``-P spec``."""
    settings = Settings(password=PASSWORD, options=options)
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    fallback = plugins.fallback(spec, settings)
    server = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports=plugins.transports(settings),
        fallback=fallback,
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=(events.append if events is not None else lambda event: None),
        ssl_context=ssl_context,
    )
    bound: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.serve(started=bound.set_result))
    try:
        yield server, await asyncio.wait_for(bound, 5)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
        close = getattr(fallback, "close", None)
        if close is not None:
            await close()
