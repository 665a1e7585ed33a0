"""Strangers' probes get what a stock nginx with no site gives, and nothing names aiohttp.

Every probe of ``flyway_core.testing.probes.PROBES`` goes over a raw socket to a
real flyway server and to a real nginx 1.22 (Debian's stock ``nginx.conf``
settings, a server answering 404 for every path, as the default fallback does).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flyway_core import Settings
from flyway_core.frontdoor_pages import SERVER
from flyway_core.protocol import ClientConnection, derive_master_key
from flyway_core.testing import free_port, serving, wait_port
from flyway_core.testing.probes import PROBES, Answer, Probe, answer

# What still differs from nginx, and why. These still get nothing that names aiohttp
# or Python, and the same Server header; the test checks that they do still differ.
DIFFERENCES = {
    "header line without colon": "nginx skips an invalid header line and answers 404; "
    "aiohttp's parser refuses the request, so we answer nginx's 400",
}
# Not in the corpus, known to differ: more than 32 KB of headers in all (nginx: 400,
# aiohttp takes up to 128 lines of 8 KB); an unknown Expect on a target no route can
# match (``*``, ``host:443``) gets aiohttp's 417; after an unread body, aiohttp lingers
# 10 s where nginx lingers up to 30 s.
STOCK_HTTP = """\
sendfile on;
tcp_nopush on;
types_hash_max_size 2048;
include /etc/nginx/mime.types;
default_type application/octet-stream;
gzip on;
"""


@pytest.fixture(scope="module")
def nginx_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real nginx, Debian's stock http settings, answering 404 for every path."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed")
    work = tmp_path_factory.mktemp("nginx")
    port = free_port()
    temps = " ".join(
        f"{kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    temps += f" uwsgi_temp_path {work / 'uwsgi'}; scgi_temp_path {work / 'scgi'};"
    (work / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {work / 'nginx.pid'};\n"
        f"error_log {work / 'error.log'};\nevents {{ worker_connections 768; }}\n"
        f"http {{\n{STOCK_HTTP}access_log off; {temps}\n"
        f"server {{ listen 127.0.0.1:{port} default_server; root {work / 'www'};\n"
        "server_name _; location / { return 404; } }\n}\n"
    )
    (work / "www").mkdir()
    proc = subprocess.Popen(
        [binary, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def flyway_port() -> AsyncIterator[int]:
    async with serving(Settings(password="pw"), []) as (_, bound):
        yield bound.port


def _names_nothing(answer: Answer) -> None:
    lowered = answer.raw.lower()
    assert b"aiohttp" not in lowered
    assert b"python" not in lowered
    for response in answer.responses:
        assert response.header("Server") == SERVER


async def _both(probe: Probe, flyway_port: int, nginx_port: int) -> tuple[Answer, Answer]:
    ours, theirs = await asyncio.gather(answer(flyway_port, probe), answer(nginx_port, probe))
    return ours, theirs


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
async def test_a_probe_gets_what_nginx_gives(
    probe: Probe, flyway_port: int, nginx_port: int
) -> None:
    ours, theirs = await _both(probe, flyway_port, nginx_port)
    _names_nothing(ours)
    if probe.name in DIFFERENCES:
        assert [r.comparable() for r in ours.responses] != [
            r.comparable() for r in theirs.responses
        ], f"{probe.name} no longer differs: take it off DIFFERENCES"
        return
    assert [r.comparable() for r in ours.responses] == [r.comparable() for r in theirs.responses]
    assert ours.closed == theirs.closed  # closed at once, or held open (kept alive, lingering)


async def test_a_101_carries_the_same_server_header_in_the_same_place(flyway_port: int) -> None:
    hello = ClientConnection(derive_master_key("pw"), now=time.time()).hello()
    token = base64.urlsafe_b64encode(hello).rstrip(b"=").decode()
    upgrade = Probe(
        "WebSocket upgrade with the password",
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: sid={token}\r\n\r\n"
        ).encode(),
    )
    got = await answer(flyway_port, upgrade)
    (switching,) = got.responses
    assert switching.status == 101
    assert switching.headers[:2] == [("Server", SERVER), ("Date", switching.header("Date"))]
    assert b"aiohttp" not in got.raw.lower() and b"python" not in got.raw.lower()
