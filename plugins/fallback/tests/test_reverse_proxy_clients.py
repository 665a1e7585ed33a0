"""``-P http(s)://``: visitors that misbehave, and sites nginx would take as they are.

nginx (``intermediaries.site``) is the site. Clients that never read must not take
the site down for everyone (nginx's ``send_timeout``, and a bounded wait for the
pool ending in its 504 page).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import socket
import time
from collections.abc import Iterator

from fallback_site import door
from intermediaries.children import make_workdir
from intermediaries.site import run_nginx_site

from flyway_core.testing.probes import Probe, answer

SMALL = Probe("small", b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")


def _huge_site() -> Iterator[int]:
    root = make_workdir("huge")
    with (root / "huge.bin").open("wb") as sparse:
        sparse.truncate(1 << 30)  # zeros nginx sends without a disk read
    (root / "small.txt").write_text("hello, world\n")
    for path in root.iterdir():
        path.chmod(0o644)
    try:
        with run_nginx_site(root) as nginx:
            yield nginx.port
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _never_reading(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


async def test_clients_that_never_read_do_not_hold_the_site_for_good() -> None:
    """Both pool connections go to clients that take nothing of a 1 GiB answer: a new
    visitor gets nginx's 504 after the pool wait, and is served once the send timeout
    closed them (before, it waited for good and the held clients stayed open)."""
    site = _huge_site()
    port = next(site)
    try:
        spec = f"http://127.0.0.1:{port}"
        options = {"reverse_proxy_connections": 2, "reverse_proxy_timeout": 0.5}
        async with door(spec, reverse_proxy_send_timeout=1.5, **options) as (_, bound):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.monotonic()
            held = [_never_reading(bound.port) for _ in range(2)]
            await asyncio.sleep(0.2)  # both answers are stuck in the sockets' buffers
            waited = await answer(bound.port, SMALL, quiet=1.0, limit=3.0)
            assert [r.status for r in waited.responses] == [504]
            assert 0.4 < waited.elapsed < 1.2  # the pool wait, before the held were let go
            await asyncio.sleep(max(0.0, start + 1.8 - time.monotonic()))
            served = await answer(bound.port, SMALL, limit=3.0)
            assert [r.status for r in served.responses] == [200]
            assert served.responses[0].body == b"hello, world\n"
            for sock in held:  # closed by flyway: what was buffered, then the end
                sock.settimeout(5)
                while sock.recv(1 << 20):
                    pass
                sock.close()
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    finally:
        site.close()
    assert grown < 16 << 10, f"peak RSS grew by {grown} KiB"
