"""Compare what a prober gets from two ports: answers, how the connection ended, timing."""

from __future__ import annotations

import asyncio
import re
import statistics
import time

from flyway_core.testing.probes import Answer, Probe, answer

__all__ = ["Comparable", "comparable", "median_ms", "same_answers", "timed"]

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


async def same_answers(probe: Probe, ours: int, theirs: int) -> tuple[Answer, Answer]:
    """Send ``probe`` to both ports at once; return both answers."""
    a, b = await asyncio.gather(answer(ours, probe), answer(theirs, probe))
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
