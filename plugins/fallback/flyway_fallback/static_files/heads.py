"""What nginx answers from a request's head alone, before it looks for a file.

In nginx's order: the request line (505 for HTTP/2 and up; 400 for ``CONNECT``
and a target that is neither a path nor an absolute URI), a header line too long
for one of nginx's 8 KiB header buffers (its "Request Header Or Cookie Too Large"
400), then the headers as ``ngx_http_process_request_header`` checks them (a ``Host`` that
``ngx_http_validate_host`` refuses: 400; ``Transfer-Encoding`` in an HTTP/1.0
request: 400, and anything but ``chunked``: 501), then ``TRACE`` (405) and a
declared body over ``client_max_body_size`` (413). ``host_of`` is the ``Host``
as nginx keeps it (lower case, no port, no trailing dot), which its redirects name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flyway_core.frontdoor_pages import HEADER_TOO_LARGE

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["LINE_MAX", "MAX_BODY", "early_status", "host_of"]

MAX_BODY = 1 << 20  # nginx's stock client_max_body_size
LINE_MAX = 8190  # nginx's large_client_header_buffers (8k) less the line's CRLF


def early_status(request: web.BaseRequest) -> int | None:
    """nginx's answer before it looks for a file, if it gives one."""
    if request.version >= (2, 0):
        return 505
    target = request.raw_path
    if request.method == "CONNECT" or not target.startswith(("/", "http://", "https://")):
        return 400
    if any(len(name) + len(value) + 2 > LINE_MAX for name, value in request.raw_headers):
        return HEADER_TOO_LARGE  # the line (and its CRLF) does not fit one 8 KiB buffer
    hosts = [value for name, value in request.raw_headers if name.lower() == b"host"]
    if hosts and host_of(hosts[0]) is None:
        return 400  # "client sent invalid host header"
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None:
        if request.version < (1, 1):
            return 400  # "client sent HTTP/1.0 request with Transfer-Encoding header"
        if coding.lower() != "chunked":
            return 501  # "client sent unknown Transfer-Encoding"
    if request.method == "TRACE":
        return 405
    if (request.content_length or 0) > MAX_BODY:
        return 413
    return None


def host_of(raw: bytes) -> str | None:
    """``Host`` as ``ngx_http_validate_host`` leaves it, or None where it refuses it.

    Refused: empty, ``..``, a ``/``, a control byte or a space; kept: up to the
    port's ``:`` (or a bracketed literal's ``]``), a trailing dot dropped, in lower case.
    """
    dot, length, state = -2, len(raw), "usual"
    for i, byte in enumerate(raw):
        if byte == ord("."):
            if dot == i - 1:
                return None
            dot = i
        elif byte == ord(":"):
            if state == "usual":
                length, state = i, "rest"
        elif byte == ord("["):
            if i == 0:
                state = "literal"
        elif byte == ord("]"):
            if state == "literal":
                length, state = i + 1, "rest"
        elif byte == ord("/") or byte <= 0x20 or byte == 0x7F:
            return None
    if dot == length - 1:
        length -= 1
    if length <= 0:
        return None
    return raw[:length].lower().decode("utf-8", "surrogateescape")  # as aiohttp decodes
