"""``-P /dir``: the directory as nginx serves it, from the request line to the last byte.

Theory of operation, in nginx's order. Requests nginx refuses before looking for
a file get its answer (``heads.early_status``: 505, 400 for ``CONNECT``, ``*``
and a ``Host`` nginx refuses, 400 or 501 for a ``Transfer-Encoding`` it refuses,
405 for ``TRACE``, 413 over 1 MiB). Then the target is located under the root
(``paths.locate``, nginx's normalisation; an invalid one: 400 and a close;
refused or missing: 404, as is a file asked with a trailing slash); methods other than GET, HEAD and
POST get 405 for what exists (Debian's site looks with ``try_files`` first). A
directory asked without its slash gets nginx's 301 to it (an absolute
``Location``, the request's host and the server's port); with it, its
``index.html``, else a listing with ``autoindex``, else 403. POST to a file is
405. A file gets 200 with nginx's headers (``Content-Type`` from its
``mime.types``, ``Last-Modified``, ``ETag`` ``"mtime-size"`` in hex,
``Accept-Ranges``), or 412 when ``If-Match`` / ``If-Unmodified-Since`` fail
(nginx's page, and a close after it), or 304 when ``If-None-Match`` / ``If-Modified-Since`` (exact,
nginx's default) say the client has it, or 206 for one satisfiable byte range
(416 and nginx's page when none is; several: ``multipart/byteranges``). HTML over
20 bytes is gzipped, as Debian's ``gzip on`` does, for HTTP/1.1 clients that
accept it (chunked, weak ETag, no ranges; a large file as it is read). Files up
to ``SMALL_FILE`` are sent with the head in one write, from memory while their
``stat`` is unchanged (``SmallFiles``, 16 MiB); larger ones go out with sendfile.
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from flyway_core.frontdoor_pages import REASONS, accepts_gzip, page, page_body
from flyway_fallback.static_files.answer import FileRegion, GzippedFile, HeadAnswer
from flyway_fallback.static_files.cache import SmallFiles
from flyway_fallback.static_files.heads import early_status, host_of
from flyway_fallback.static_files.listing import listing
from flyway_fallback.static_files.mime import DEFAULT_TYPE, TYPES
from flyway_fallback.static_files.paths import InvalidTarget, Located, inside, locate
from flyway_fallback.static_files.validators import (
    Unsatisfiable,
    byte_ranges,
    etag_of,
    http_date,
    not_modified,
    precondition_failed,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "MAX_RANGES",
    "SMALL_FILE",
    "StaticFallback",
]

SMALL_FILE = 64 << 10  # files up to this size are read whole and written with the head
_GZIP_MIN = 20  # nginx's gzip_min_length
MAX_RANGES = 100  # ranges in one request answered as multipart (more: the whole file)
_boundaries = 0  # multipart answers so far (their boundary)


class StaticFallback:
    """Serves the files under ``root`` to every non-tunnel request, as nginx would."""

    def __init__(self, root: Path, *, autoindex: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.autoindex = autoindex
        self._small = SmallFiles()

    def __str__(self) -> str:
        return f"static files from {self.root}" + (" (autoindex)" if self.autoindex else "")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status = early_status(request)
        if status is not None:
            return page(status, request, close=True)
        # a body is never read: the answer goes at once, then aiohttp discards the body
        # and keeps the connection (nginx's discard), so a POST whose body comes short or
        # slowly gets its 405 as from nginx, not silence until the body deadline
        try:
            located = locate(self.root, request.raw_path)
        except InvalidTarget:  # a bad escape, a NUL, ".." above the root
            return page(400, request, close=True)
        if located is None or located.stat is None:
            return page(404, request)
        st = located.stat
        if located.slash and not stat.S_ISDIR(st.st_mode):
            return page(404, request)  # nginx: "/small.txt/" is no file (ENOTDIR)
        if request.method not in ("GET", "HEAD", "POST"):
            return page(405, request)  # nginx looks for the file first (try_files)
        if stat.S_ISDIR(st.st_mode):
            return self._directory(request, located)
        if not stat.S_ISREG(st.st_mode):
            return page(404, request)
        if request.method == "POST":
            return page(405, request)
        return _file(request, located.path, st, self._small)

    def _directory(self, request: web.Request, located: Located) -> web.StreamResponse:
        if not located.slash:
            return _redirect(request, located)
        found = inside(self.root, os.path.join(located.path, "index.html"))
        if found is not None and stat.S_ISREG(found[1].st_mode):
            if request.method == "POST":
                return page(405, request)
            return _file(request, found[0], found[1], self._small)
        if not self.autoindex:
            return page(403, request)
        if request.method == "POST":
            return page(405, request)
        body = listing(Path(located.path), located.uri)
        headers = [("Content-Type", "text/html")]
        return _maybe_gzipped(request, body, headers, "", len(body), streamed=True)


def _redirect(request: web.Request, located: Located) -> web.StreamResponse:
    """nginx's 301 to the directory's slash form (``absolute_redirect``, ``port_in_redirect``).

    The scheme is the connection's (``https`` with ``--cert``), the host the request's
    ``Host`` without its port, else the local address the client reached; the port is
    the server's, left out when it is the scheme's default.
    """
    secure = request.transport is not None and request.transport.get_extra_info("sslcontext")
    scheme, default = ("https", 443) if secure else ("http", 80)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    raw_host = next((v for k, v in request.raw_headers if k.lower() == b"host"), b"")
    host = (host_of(raw_host) or "") if request.host else ""  # early_status refused a bad one
    if not host and sockname:
        host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    port = sockname[1] if sockname else default
    where = request.raw_path.partition("?")[0]
    where = where if where.startswith("/") else located.uri
    location = f"{scheme}://{host or 'localhost'}{'' if port == default else f':{port}'}{where}/"
    if located.query:
        location += "?" + located.query
    body = b"" if request.method == "HEAD" else page_body(301)
    headers = [("Content-Type", "text/html"), ("Content-Length", str(len(page_body(301))))]
    headers.append(("Location", location))
    return HeadAnswer(
        301,
        REASONS[301],
        headers,
        body,
        keep_alive=request.keep_alive,
        head_only=request.method == "HEAD",
    )


def _content_type(path: str) -> str:
    suffix = os.path.splitext(path)[1]
    return TYPES.get(suffix[1:].lower(), DEFAULT_TYPE) if suffix else DEFAULT_TYPE


def _file(
    request: web.Request, path: str, st: os.stat_result, small: SmallFiles
) -> web.StreamResponse:
    size, mtime = st.st_size, int(st.st_mtime)
    etag, modified = etag_of(st), http_date(mtime)
    keep, head = request.keep_alive, request.method == "HEAD"
    if precondition_failed(request, etag, mtime):
        body = page_body(412, msie="MSIE " in request.headers.get("User-Agent", ""))
        headers = [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
        return HeadAnswer(
            412,
            "Precondition Failed",
            headers,
            b"" if head else body,
            keep_alive=keep,
            head_only=head,
            close_after=True,  # nginx says keep-alive, then closes (its filter_finish)
        )
    if not_modified(request, etag, mtime):
        headers = [("Last-Modified", modified), ("ETag", etag)]
        return HeadAnswer(304, "Not Modified", headers, keep_alive=keep, head_only=True)
    ctype = _content_type(path)
    if ctype == "text/html" and size >= _GZIP_MIN and _gzip_wanted(request):
        html: bytes | GzippedFile = (
            small.read(path, st) if size <= SMALL_FILE else GzippedFile(path)
        )
        return _maybe_gzipped(request, html, [("Content-Type", ctype)], modified, size, etag)
    try:
        chosen = byte_ranges(request, size, etag, mtime)
    except Unsatisfiable:
        body = page_body(416)
        headers = [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
        headers.append(("Content-Range", f"bytes */{size}"))
        return HeadAnswer(
            416, REASONS[416], headers, b"" if head else body, keep_alive=keep, head_only=head
        )
    if chosen is not None and len(chosen) > 1:
        return _multipart(request, path, chosen, size, ctype, modified, etag)
    start, count, status = 0, size, 200
    if chosen is not None:
        start, count, status = chosen[0][0], chosen[0][1] - chosen[0][0] + 1, 206
    headers = [("Content-Type", ctype), ("Content-Length", str(count)), ("Last-Modified", modified)]
    headers.append(("ETag", etag))
    if status == 206:
        headers.append(("Content-Range", f"bytes {start}-{start + count - 1}/{size}"))
    else:
        headers.append(("Accept-Ranges", "bytes"))
    reason = "OK" if status == 200 else "Partial Content"
    if head or count == 0:
        return HeadAnswer(status, reason, headers, keep_alive=keep, head_only=True)
    if size <= SMALL_FILE:
        try:
            data = small.read(path, st)[start : start + count]
        except PermissionError:
            return page(403, request)  # nginx: 403 for a file it may not open
        return HeadAnswer(status, reason, headers, data, keep_alive=keep)
    if not os.access(path, os.R_OK):
        return page(403, request)
    return HeadAnswer(status, reason, headers, FileRegion(path, start, count), keep_alive=keep)


def _multipart(
    request: web.Request,
    path: str,
    ranges: list[tuple[int, int]],
    size: int,
    ctype: str,
    modified: str,
    etag: str,
) -> web.StreamResponse:
    """nginx's ``multipart/byteranges`` answer: each range with its own small head.

    The boundary is a counter of this process, twenty digits, as nginx's is of its own.
    The parts are copied from the file as they are written; past ``MAX_RANGES`` ranges
    the file is sent whole (a bound on the work one request asks for).
    """
    global _boundaries
    if len(ranges) > MAX_RANGES:
        return _file_whole(request, path, size, ctype, modified, etag)
    _boundaries += 1
    boundary = f"{_boundaries:020d}"
    parts: list[bytes | FileRegion] = []
    for start, end in ranges:
        head = f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
        head += f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n"
        parts += [head.encode(), FileRegion(path, start, end - start + 1)]
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    length = sum(len(p) if isinstance(p, bytes) else p.count for p in parts)
    body = tuple(parts)
    headers = [("Content-Type", f"multipart/byteranges; boundary={boundary}")]
    headers += [("Content-Length", str(length)), ("Last-Modified", modified), ("ETag", etag)]
    head_only = request.method == "HEAD"
    return HeadAnswer(
        206,
        "Partial Content",
        headers,
        b"" if head_only else body,
        keep_alive=request.keep_alive,
        head_only=head_only,
    )


def _file_whole(
    request: web.Request, path: str, size: int, ctype: str, modified: str, etag: str
) -> web.StreamResponse:
    headers = [("Content-Type", ctype), ("Content-Length", str(size)), ("Last-Modified", modified)]
    headers += [("ETag", etag), ("Accept-Ranges", "bytes")]
    body = FileRegion(path, 0, size)
    return HeadAnswer(200, "OK", headers, body, keep_alive=request.keep_alive)


def _gzip_wanted(request: web.Request) -> bool:
    return request.method != "HEAD" and accepts_gzip(request)


def _maybe_gzipped(
    request: web.Request,
    body: bytes | GzippedFile,
    headers: list[tuple[str, str]],
    modified: str,
    size: int,
    etag: str = "",
    *,
    streamed: bool = False,
) -> web.StreamResponse:
    """``body`` as nginx's gzip filter sends it (when the client takes it), else as it is.

    ``streamed``: nginx made it on the fly (a listing): no length, so chunked for
    HTTP/1.1 and until the close for HTTP/1.0.
    """
    keep, head = request.keep_alive, request.method == "HEAD"
    if isinstance(body, GzippedFile):  # only ever asked for when the client takes gzip
        body = b"" if head else body
    if streamed and not _gzip_wanted(request):
        out = [*headers]
        if request.version >= (1, 1):
            out.append(("Transfer-Encoding", "chunked"))
        else:
            keep = False
        chunked = request.version >= (1, 1)
        return HeadAnswer(
            200, "OK", out, b"" if head else body, keep_alive=keep, chunked=chunked, head_only=head
        )
    if size >= _GZIP_MIN and _gzip_wanted(request):
        packed: bytes | GzippedFile = body
        if isinstance(body, bytes):
            deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
            packed = deflate.compress(body) + deflate.flush()
        out = [*headers]
        if modified:
            out.append(("Last-Modified", modified))
        out.append(("Transfer-Encoding", "chunked"))
        if etag:
            out.append(("ETag", "W/" + etag))
        out.append(("Content-Encoding", "gzip"))
        return HeadAnswer(200, "OK", out, packed, keep_alive=keep, chunked=True)
    assert isinstance(body, bytes)
    out = [*headers, ("Content-Length", str(len(body)))]
    if modified:
        out.append(("Last-Modified", modified))
    return HeadAnswer(200, "OK", out, b"" if head else body, keep_alive=keep, head_only=head)
