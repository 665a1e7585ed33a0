"""Compare what a prober gets from two ports: answers, how the connection ended, timing."""

from __future__ import annotations

import asyncio
import re
import statistics
import time

from flyway_core.testing.probes import Answer, Probe, answer

__all__ = [
    "QUIET",
    "SITE_PROBES",
    "Comparable",
    "comparable",
    "median_ms",
    "same_answers",
    "timed",
]

# what a site with files invites beyond the corpus (paths of fallback_site.make_site)
SITE_PROBES = [
    Probe(name, (head + "\r\n\r\n").encode())
    for name, head in [
        ("directory without its slash", "GET /docs HTTP/1.1\r\nHost: x"),
        ("directory without an index", "GET /empty/ HTTP/1.1\r\nHost: x"),
        ("a range", "GET /1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19"),
        ("two ranges", "GET /1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,5-6"),
        ("a range past the end", "GET /1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5000-"),
        ("a dot-dot path", "GET /../etc/passwd HTTP/1.1\r\nHost: x"),
        ("HTTP/1.0 keep-alive", "GET /small.txt HTTP/1.0\r\nConnection: keep-alive"),
        ("If-None-Match", 'GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: "x"'),
    ]
]


Comparable = list[tuple[str, list[tuple[str, str]], bytes]]
_BOUNDARY = re.compile(rb"\d{20}")


def comparable(got: Answer, port: int) -> Comparable:
    """Every response but its Date; this server's own port in a Location reads PORT,
    and nginx's multipart boundary (a counter of the nginx process) reads 0..0."""
    out: Comparable = []
    for response in got.responses:
        headers = []
        for name, value in response.headers:
            if name == "Date":
                continue
            value = value.replace(f":{port}/", ":PORT/")
            headers.append((name, _BOUNDARY.sub(b"0" * 20, value.encode()).decode()))
        out.append((response.status_line, headers, _BOUNDARY.sub(b"0" * 20, response.body)))
    return out


QUIET = 0.3  # seconds of silence that end an answer (the server holds the connection)


async def same_answers(probe: Probe, ours: int, theirs: int) -> tuple[Answer, Answer]:
    """Send ``probe`` to both ports at once; return both answers."""
    a, b = await asyncio.gather(
        answer(ours, probe, quiet=QUIET), answer(theirs, probe, quiet=QUIET)
    )
    return a, b


async def timed(port: int, probe: Probe) -> float:
    """Seconds from connecting to the whole answer (its end, or the connection's close)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(probe.data)
        raw = b""
        async with asyncio.timeout(5):
            while True:
                try:
                    chunk = await reader.read(1 << 16)
                except ConnectionError:
                    break
                if not chunk:
                    break
                raw += chunk
                parsed = Answer.parse(raw, False)
                if parsed.responses and _complete(raw, parsed):
                    break
        return time.perf_counter() - start
    finally:
        writer.close()


def _complete(raw: bytes, parsed: Answer) -> bool:
    last = parsed.responses[-1]
    length = last.header("Content-Length")
    return length is not None and len(last.body) >= int(length)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000
