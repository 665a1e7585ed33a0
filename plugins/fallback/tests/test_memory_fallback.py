"""Large bodies through the real ``flyway`` command keep its memory flat, both ways.

Each test starts ``flyway`` in its own process (uvloop when installed, as users
run it), warms it up, then moves hundreds of MiB through it while sampling the
process's current resident set (``VmRSS`` of ``/proc/PID/status``) every few
milliseconds. A body held whole, or a buffer that grows with the transfer, shows
as growth of the same order as the body; the bound is a small fraction of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from fallback_site import PASSWORD
from flyway_procs import flyway
from intermediaries.children import make_workdir
from intermediaries.site import run_nginx_site

from flyway_core.testing import free_port, wait_port
from flyway_core.testing.sites import web_site

GROWTH = 16 << 10  # KiB: the most the server's resident set may grow while a body passes
_BLOCK = 1 << 20


def _rss_kib(pid: int) -> int:
    """The process's resident set now (not its peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def _peak_rss(pid: int) -> AsyncIterator[list[int]]:
    """Sample ``pid``'s current RSS while the block runs; yields [baseline, peak] (KiB)."""
    seen = [_rss_kib(pid)] * 2

    async def sample() -> None:
        while True:
            seen[1] = max(seen[1], _rss_kib(pid))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        seen[1] = max(seen[1], _rss_kib(pid))


@contextlib.contextmanager
def _flyway_in_front_of(spec: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q", "-P", spec]) as server:
        wait_port(port)
        yield server, port


def _uses_uvloop(pid: int) -> bool:
    return "uvloop" in Path(f"/proc/{pid}/maps").read_text()


async def test_a_1_gib_download_through_the_proxy_keeps_the_servers_memory_flat() -> None:
    root = make_workdir("huge")
    size = 1 << 30
    with (root / "huge.bin").open("wb") as sparse:
        sparse.truncate(size)  # a sparse file of zeros: nginx sends it without a disk read
    (root / "huge.bin").chmod(0o644)
    (root / "warm.bin").write_bytes(bytes(4 << 20))
    (root / "warm.bin").chmod(0o644)
    try:
        with (
            run_nginx_site(root) as nginx,
            _flyway_in_front_of(f"http://127.0.0.1:{nginx.port}") as (server, port),
        ):
            async with aiohttp.ClientSession(auto_decompress=False) as http:
                async with http.get(f"http://127.0.0.1:{port}/warm.bin") as warm:
                    assert len(await warm.read()) == 4 << 20
                crc, got = 0, 0
                async with _peak_rss(server.pid) as rss:
                    async with http.get(f"http://127.0.0.1:{port}/huge.bin") as response:
                        async for piece in response.content.iter_chunked(_BLOCK):
                            crc = zlib.crc32(piece, crc)
                            got += len(piece)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert got == size
    assert crc == _zeros_crc(size)
    grown = rss[1] - rss[0]
    assert grown < GROWTH, f"the server's RSS grew by {grown} KiB while 1 GiB passed"


def _zeros_crc(size: int) -> int:
    block, crc = bytes(_BLOCK), 0
    for _ in range(size >> 20):
        crc = zlib.crc32(block, crc)
    return crc


UPLOADED = web.AppKey("uploaded", list)


async def _count_and_hash(request: web.Request) -> web.Response:
    """The site: reads the body as it comes, keeps only its size and hash."""
    digest, size = hashlib.sha256(), 0
    async for piece in request.content.iter_any():
        digest.update(piece)
        size += len(piece)
    request.app[UPLOADED].append(
        (size, digest.hexdigest(), request.headers.get("Transfer-Encoding"))
    )
    return web.Response(text="stored")


@pytest.fixture
async def counting_site() -> AsyncIterator[tuple[int, list[tuple[int, str, str | None]]]]:
    app = web.Application()
    app[UPLOADED] = []
    app.router.add_route("POST", "/{tail:.*}", _count_and_hash)
    async with web_site(app) as port:
        yield port, app[UPLOADED]


async def test_a_512_mib_chunked_upload_through_the_proxy_keeps_the_servers_memory_flat(
    counting_site: tuple[int, list[tuple[int, str, str | None]]],
) -> None:
    """nginx's 1 MiB client_max_body_size would refuse it, so the site is a small
    aiohttp server that counts and hashes what arrives."""
    site_port, uploaded = counting_site
    size = 512 << 20
    block = os.urandom(_BLOCK)
    expected = hashlib.sha256()
    for _ in range(size // _BLOCK):
        expected.update(block)

    async def body(blocks: int) -> AsyncIterator[bytes]:
        for _ in range(blocks):
            yield block

    with _flyway_in_front_of(f"http://127.0.0.1:{site_port}") as (server, port):
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/upload"
            async with http.post(url, data=body(4)) as warm:  # imports, the pool
                assert await warm.text() == "stored"
            async with _peak_rss(server.pid) as rss:
                async with http.post(url, data=body(size // _BLOCK)) as response:
                    assert await response.text() == "stored"
    assert uploaded[-1] == (size, expected.hexdigest(), "chunked")
    grown = rss[1] - rss[0]
    assert grown < GROWTH, f"the server's RSS grew by {grown} KiB while 512 MiB went up"


async def test_a_large_file_under_uvloop_goes_out_whole_and_memory_stays_flat() -> None:
    """uvloop has no ``loop.sendfile``: the file goes out 64 KiB at a time
    (``answer._copy``), byte for byte, without growing the server."""
    pytest.importorskip("uvloop")
    root = make_workdir("large")
    size = 256 << 20
    block = os.urandom(_BLOCK)
    expected = hashlib.sha256()
    with (root / "large.bin").open("wb") as out:
        for _ in range(size // _BLOCK):
            out.write(block)
            expected.update(block)
    try:
        with _flyway_in_front_of(str(root)) as (server, port):
            assert _uses_uvloop(server.pid), "the flyway command runs without uvloop"
            got = hashlib.sha256()
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/large.bin"
                async with http.get(url, headers={"Range": "bytes=0-99999"}) as warm:
                    assert await warm.read() == (block * 1)[:100000]
                async with _peak_rss(server.pid) as rss:
                    async with http.get(url) as response:
                        assert response.headers["Content-Length"] == str(size)
                        async for piece in response.content.iter_chunked(_BLOCK):
                            got.update(piece)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert got.hexdigest() == expected.hexdigest()
    grown = rss[1] - rss[0]
    assert grown < GROWTH, f"the server's RSS grew by {grown} KiB for a 256 MiB file"
