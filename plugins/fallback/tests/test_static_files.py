"""``-P /dir`` answers as nginx serving the same directory, and never serves outside it.

The comparison sends the probe corpus and a site's own probes to flyway ``-P
site_root`` and to nginx serving ``site_root`` (Debian's stock config); what still
differs is listed in ``DIFFERENCES`` with the reason, and checked to still differ.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from fallback_compare import SITE_PROBES, comparable, same_answers
from fallback_site import door
from flyway_fallback import static_files
from intermediaries.children import make_workdir
from intermediaries.site import run_nginx_site

from flyway_core import ConfigError, Settings
from flyway_core.testing.probes import PROBES, Probe, answer

DIFFERENCES = {
    "header line without colon": "aiohttp's parser refuses it (nginx skips the line and "
    "serves the page); without a site to hand the connection to, the door answers 400",
}


def _probe(head: str) -> Probe:
    return Probe(head.split("\r\n")[0], (head + "\r\n\r\n").encode())


STATIC_PROBES = (
    [
        _probe(f"GET {path} HTTP/1.1\r\nHost: x")
        for path in (
            "/docs/",
            "/style.css",
            "/app.js",
            "/image.png",
            "/space%20name.txt",
            "/1k.bin",
        )
    ]
    + [
        _probe("GET /index.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip"),
        _probe("GET /docs/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=-3"),
        _probe("GET /1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-"),
        _probe("HEAD /1k.bin HTTP/1.1\r\nHost: x"),
        _probe("GET /small.txt HTTP/1.0"),
        _probe("GET /docs HTTP/1.0"),  # no Host: nginx's 301 names the address the client reached
        _probe("GET /docs?a=1 HTTP/1.1\r\nHost: x"),
        _probe("POST /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0"),
        Probe(
            "Range: bytes=abc", b"GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=abc\r\n\r\n"
        ),
        Probe(
            "Range: bytes=0-1,", b"GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,\r\n\r\n"
        ),
    ]
    + [  # a file asked as a directory; nginx's normalisation of the path, and its 400s
        _probe(f"GET {path} HTTP/1.1\r\nHost: x")
        for path in (
            "/small.txt/",
            "/docs/index.html/",
            "/./small.txt",
            "/docs/./a.txt",
            "/%2e/small.txt",
            "/docs/.",
            "/docs/../small.txt",
            "/docs/..%2fsmall.txt",
            "/docs%2fa.txt",
            "/index.html/..",
            "/.",
            "/small.txt#x",
            "/%",
            "/%zz",
            "/%2",
            "/%u002e%u002e/small.txt",
            "/small.txt%00",
            "/docs/../..",
        )
    ]
)


@pytest.fixture
async def static_port(site_root: Path) -> AsyncIterator[int]:
    async with door(str(site_root)) as (_, bound):
        yield bound.port


@pytest.mark.parametrize("probe", [*PROBES, *SITE_PROBES, *STATIC_PROBES], ids=lambda p: p.name)
async def test_a_probe_gets_what_nginx_serving_the_directory_gives(
    probe: Probe, static_port: int, nginx_site: int
) -> None:
    ours, theirs = await same_answers(probe, static_port, nginx_site)
    if probe.name in DIFFERENCES:
        assert comparable(ours, static_port) != comparable(theirs, nginx_site), (
            f"{probe.name} no longer differs: take it off DIFFERENCES"
        )
        return
    assert comparable(ours, static_port) == comparable(theirs, nginx_site)
    assert ours.ending == theirs.ending


# --- nothing outside the root ------------------------------------------------------------

ESCAPES = [
    "/../secret.txt",
    "/docs/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%252e%252e/secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/docs/a.txt%00.html",
    "//" + "{outside}/secret.txt",
    "http://x/../secret.txt",
    "/link/secret.txt",
    "/link-file",
]


@pytest.fixture
def jail() -> Iterator[Path]:
    """A root with a file and a secret beside it, and symlinks pointing out of the root."""
    top = make_workdir("jail")
    (top / "secret.txt").write_text("the secret\n")
    root = top / "www"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("docs a\n")
    (root / "link").symlink_to(top)
    (root / "link-file").symlink_to(top / "secret.txt")
    (root / "inside").symlink_to(root / "docs" / "a.txt")
    yield root
    for path in (root / "link", root / "link-file", root / "inside"):
        path.unlink()


@pytest.mark.parametrize("target", ESCAPES)
async def test_nothing_outside_the_root_is_served(jail: Path, target: str) -> None:
    target = target.replace("{outside}", str(jail.parent).lstrip("/"))
    async with door(str(jail)) as (_, bound):
        got = await answer(bound.port, _probe(f"GET {target} HTTP/1.1\r\nHost: x"))
    assert b"the secret" not in got.raw
    assert [r.status for r in got.responses] in ([404], [400])  # 400: nginx's, ".." too many


async def test_a_symlink_inside_the_root_is_served(jail: Path) -> None:
    async with door(str(jail)) as (_, bound):
        got = await answer(bound.port, _probe("GET /inside HTTP/1.1\r\nHost: x"))
    assert got.responses[0].status == 200 and got.responses[0].body == b"docs a\n"


# --- what a browser and a download manager use ------------------------------------------


async def test_etag_and_last_modified_give_304s(static_port: int, site_root: Path) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{static_port}/small.txt"
        async with http.get(url) as first:
            assert first.status == 200
            etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
            assert first.headers["Content-Type"] == "text/plain"
        async with http.get(url, headers={"If-None-Match": etag}) as again:
            assert again.status == 304 and await again.read() == b""
        async with http.get(url, headers={"If-Modified-Since": modified}) as again:
            assert again.status == 304
        async with http.get(url, headers={"If-None-Match": '"other"'}) as changed:
            assert changed.status == 200


async def test_ranges_give_206_and_past_the_end_416(static_port: int, site_root: Path) -> None:
    whole = (site_root / "big.bin").read_bytes()
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{static_port}/big.bin"
        async with http.get(url, headers={"Range": "bytes=100000-1500000"}) as part:
            assert part.status == 206
            assert await part.read() == whole[100000:1500001]
            assert part.headers["Content-Range"] == f"bytes 100000-1500000/{len(whole)}"
        async with http.get(url, headers={"Range": f"bytes={len(whole)}-"}) as past:
            assert past.status == 416
            assert past.headers["Content-Range"] == f"bytes */{len(whole)}"
        async with http.head(url) as head:
            assert head.status == 200 and head.headers["Content-Length"] == str(len(whole))


async def test_a_large_file_goes_out_with_sendfile_and_memory_stays_flat() -> None:
    root = make_workdir("large")
    size = 256 << 20
    with (root / "large.bin").open("wb") as out:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            out.write(block)
    expected = hashlib.sha256()
    for _ in range(size >> 20):
        expected.update(block)
    try:
        async with door(str(root)) as (_, bound), aiohttp.ClientSession() as http:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            got = hashlib.sha256()
            async with http.get(f"http://127.0.0.1:{bound.port}/large.bin") as response:
                async for piece in response.content.iter_chunked(1 << 20):
                    got.update(piece)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
        assert got.hexdigest() == expected.hexdigest()
        assert grown < 32 << 10, f"peak RSS grew by {grown} KiB for a {size >> 20} MiB file"
    finally:
        (root / "large.bin").unlink()
        root.rmdir()


async def test_autoindex_lists_as_nginx_does(site_root: Path) -> None:
    with run_nginx_site(site_root, server_extra="autoindex on;") as nginx:
        async with door(str(site_root), static_autoindex=True) as (_, bound):
            for path in ("/listing/", "/empty/"):
                probe = _probe(f"GET {path} HTTP/1.1\r\nHost: x")
                ours, theirs = await asyncio.gather(
                    answer(bound.port, probe), answer(nginx.port, probe)
                )
                assert comparable(ours, bound.port) == comparable(theirs, nginx.port)


async def test_without_autoindex_a_directory_without_index_is_403(static_port: int) -> None:
    got = await answer(static_port, _probe("GET /listing/ HTTP/1.1\r\nHost: x"))
    assert [r.status for r in got.responses] == [403]


def test_a_spec_that_is_no_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        static_files.fallback_for(str(tmp_path / "missing"), Settings())
    assert static_files.fallback_for("http://127.0.0.1:1", Settings()) is None
    assert static_files.fallback_for(None, Settings()) is None


async def test_large_html_is_gzipped_as_it_is_read_and_ranges_stream() -> None:
    """Neither a large gzipped page nor many ranges are built whole in memory first;
    what arrives is still the file."""
    root = make_workdir("gzip")
    html = ("<p>" + "flyway " * 40000 + "</p>\n").encode() * 8  # 2.2 MB of HTML
    (root / "big.html").write_bytes(html)
    blob = os.urandom(1 << 20)
    (root / "blob.bin").write_bytes(blob)
    try:
        async with door(str(root)) as (_, bound), aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{bound.port}"
            async with http.get(base + "/big.html", headers={"Accept-Encoding": "gzip"}) as got:
                assert got.headers["Content-Encoding"] == "gzip"
                assert await got.read() == html  # aiohttp inflates it
            ranges = "bytes=0-9,100000-199999,900000-"
            async with http.get(base + "/blob.bin", headers={"Range": ranges}) as got:
                assert got.status == 206
                reader = aiohttp.MultipartReader.from_response(got)
                parts = []
                while (part := await reader.next()) is not None:
                    assert isinstance(part, aiohttp.BodyPartReader)
                    parts.append(await part.read())
        assert parts == [blob[:10], blob[100000:200000], blob[900000:]]
    finally:
        shutil.rmtree(root, ignore_errors=True)


SHORT_POSTS = [
    Probe("sized", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\na"),
    Probe("chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
]


@pytest.mark.parametrize("short", SHORT_POSTS, ids=lambda p: p.name)
async def test_a_post_whose_body_comes_short_gets_its_405_at_once(
    static_port: int, nginx_site: int, short: Probe
) -> None:
    """nginx answers from the head and discards the body; flyway read the body first
    and was silent until the body's deadline (a minute). (A body a tunnel transport
    must read to judge, over 89 bytes, still waits: docs/fallback.md.)"""
    ours, theirs = await asyncio.gather(
        answer(static_port, short, quiet=1.0), answer(nginx_site, short, quiet=1.0)
    )
    assert [r.status for r in theirs.responses] == [405]
    assert comparable(ours, static_port) == comparable(theirs, nginx_site)
    assert ours.elapsed < 0.5
