"""What the reverse proxy changes in the heads it passes on, and nothing more.

Requests: hop-by-hop headers go (RFC 9110 7.6.1: ``Connection`` and the fields it
names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``), as does ``Expect`` (the door answered it);
``X-Forwarded-For`` gets the client's address appended (nginx's
``$proxy_add_x_forwarded_for``), ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are
set; ``Host`` is the client's or the upstream's. Every other header keeps its name's
case and its place. Responses keep the upstream's status line and headers in its
order; only the hop-by-hop ones the front door frames itself are taken out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from multidict import CIMultiDict
from yarl import URL

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "HOP_BY_HOP",
    "connection_tokens",
    "door_location",
    "forward_head",
    "request_head",
    "request_headers",
    "response_headers",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_DROPPED = HOP_BY_HOP | {"expect"}
_FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
# What ``Connection`` may never take away: the framing and the Host. A client naming
# Content-Length there must not make the site read its body as the next request.
_NOT_NAMEABLE = frozenset({"content-length", "transfer-encoding", "host"})


def connection_tokens(values: Iterable[str]) -> set[str]:
    """The lower-cased options of ``Connection`` header values (``close``, field names)."""
    return {t.strip().lower() for value in values for t in value.split(",") if t.strip()}


def _decoded(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def _forwarded(request: web.BaseRequest, host: str | None) -> list[tuple[str, str]]:
    prior = request.headers.getall("X-Forwarded-For", [])
    peer = request.remote or "unknown"
    added = [("X-Forwarded-For", ", ".join([*prior, peer]))]
    added.append(("X-Forwarded-Proto", "https" if request.secure else "http"))
    if host is not None:
        added.append(("X-Forwarded-Host", host))
    return added


def request_headers(request: web.BaseRequest, *, upstream_host: str | None) -> CIMultiDict[str]:
    """The headers to send upstream for ``request`` (``upstream_host``: replace ``Host``).

    No ``Content-Length``: the framing is ``forward_head``'s, from what aiohttp parsed.
    """
    named = connection_tokens(request.headers.getall("Connection", [])) - _NOT_NAMEABLE
    client_host = request.headers.get("Host")
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in _decoded(request.raw_headers):
        lower = name.lower()
        if lower in _DROPPED or lower in named or lower in _FORWARDED or lower == "content-length":
            continue
        if lower == "host" and upstream_host is not None:
            value = upstream_host
        kept.add(name, value)
    if upstream_host is not None and "Host" not in kept:
        kept["Host"] = upstream_host
    if not request.keep_alive:
        kept["Connection"] = "close"  # so the upstream answers as it would the client
    kept.extend(_forwarded(request, client_host))
    return kept


_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no Content-Length: 0 for these


def forward_head(
    request: web.BaseRequest,
    target: str,
    *,
    upstream_host: str | None,
    site_host: str,
    length: int | None,
    chunked: bool = False,
) -> bytes:
    """The head to send a pooled connection for ``request``: ``request_headers``' headers.

    The framing is what aiohttp parsed, never a header of the client's: ``Content-Length:
    length`` (the body's length; ``None`` for no body: ``0`` unless the method takes
    none), or ``Transfer-Encoding: chunked``. ``Host`` first (``site_host``) when the
    client sent none, and ``Connection: keep-alive`` on HTTP/1.0, as aiohttp's client.
    """
    headers = request_headers(request, upstream_host=upstream_host)
    version = request.version
    lines = [f"{request.method} {target} HTTP/{version.major}.{version.minor}"]
    if "Host" not in headers:
        lines.append(f"Host: {site_host}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    elif request.method not in _BODILESS:
        lines.append("Content-Length: 0")
    if version == (1, 0) and "Connection" not in headers:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def request_head(request: web.BaseRequest, target: str, *, upstream_host: str | None) -> bytes:
    """The request's head to send a raw connection: as it came, plus ``X-Forwarded-*``.

    For a connection handed over whole (an upgrade, a request aiohttp's client cannot
    send): only ``Host`` (if asked) and the forwarding headers change, since what
    follows on the connection is the client's business.
    """
    version = request.version
    lines = [f"{request.method} {target} HTTP/{version.major}.{version.minor}"]
    client_host = request.headers.get("Host")
    for name, value in _decoded(request.raw_headers):
        lower = name.lower()
        if lower in _FORWARDED:
            continue
        if lower == "host" and upstream_host is not None:
            value = upstream_host
        lines.append(f"{name}: {value}")
    lines += [f"{name}: {value}" for name, value in _forwarded(request, client_host)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The upstream's response headers, in its order, minus what the door frames itself.

    ``Connection`` and ``Transfer-Encoding`` stay in their place (the door writes them
    as its own framing); ``Keep-Alive`` and the fields ``Connection`` names go.
    """
    headers = _decoded(raw)
    named = connection_tokens(v for k, v in headers if k.lower() == "connection")
    named -= {"close", "keep-alive", "upgrade", *_NOT_NAMEABLE}  # the framing stays the site's
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lower = name.lower()
        if lower in ("keep-alive", "proxy-connection", "trailer", "upgrade") or lower in named:
            continue
        out.add(name, value)
    return out


def door_location(
    location: str, request: web.BaseRequest, upstream_host: str, upstream_port: int
) -> str:
    """A ``Location`` that names the upstream's port, named as the client reached the site.

    A site's own redirects (nginx's 301 to a directory's slash form) carry the port it
    listens on; the client came to the door's. As nginx's ``proxy_redirect default``
    does, such a URL is rewritten to the client's ``Host`` and the door's port.
    """
    try:
        url = URL(location)
    except ValueError:
        return location
    client_host = request.headers.get("Host", "").rsplit(":", 1)[0]
    if not url.absolute or url.port != upstream_port:
        return location
    if url.host not in (upstream_host, client_host):
        return location
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if sockname else None
    scheme = "https" if request.secure else "http"
    default = 443 if request.secure else 80
    authority = (client_host or url.host or "") + ("" if port in (None, default) else f":{port}")
    rest = location.split(url.raw_authority, 1)[1] if url.raw_authority in location else "/"
    return f"{scheme}://{authority}{rest}"
