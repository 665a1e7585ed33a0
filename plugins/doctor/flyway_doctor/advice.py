"""What ``flyway doctor`` recommends from its measurements, and the table that shows it.

The measurements are in :mod:`flyway_doctor.probes`; this module turns them
into a transport, option values and the exact client command, and prints them
as a rich table (``--json`` prints the same data with stable keys).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from flyway_http_post.limits import Limits

from flyway_core.settings import DEFAULT_IDLE_TIMEOUT
from flyway_doctor.probes import Findings

__all__ = ["Advice", "advise", "show"]

FORWARD = ("-L", "LPORT:HOST:HPORT")  # placeholder in the printed client command


@dataclass(frozen=True, slots=True)
class Advice:
    """What the doctor recommends (the ``recommendation`` key of ``--json``)."""

    transport: str  # "ws" or "http"
    http_max_body: int
    http_poll_timeout: float
    idle_timeout: float | None  # -t, when WebSocket keepalives must come more often
    streaming: bool | None  # HTTP POST: whether polls will be streamed (detected by the client)
    client: str
    auto: str
    server: str | None  # options the server itself should run with, when its own do not fit
    notes: tuple[str, ...]


def advise(found: Findings, url: str, path_options: list[str], tls: list[str]) -> Advice:
    """Turn measurements into a transport, option values and the command lines to use."""
    defaults = Limits()
    body, idle, notes = found.post_body, found.idle, []
    max_body = defaults.max_body
    if body is not None and body.limit == "path":
        max_body = max(4096, min(body.largest_passing // 2, 1 << 20) >> 10 << 10)
    elif body is not None:
        max_body = min(body.server_max_body, 1 << 20)
        if body.limit == "untested":
            notes.append(f"bodies up to {_size(body.largest_passing)} passed; larger not tried")
    poll, keepalive_t = defaults.poll_timeout, None
    if idle is not None and idle.cut_after_s is not None:
        # The path's idle limit is about when it cut (unless that was sooner than a
        # hold that came back: then that cut had another cause); keep a quarter clear.
        safe = 0.75 * max(idle.longest_s or 0.0, idle.cut_after_s)
        poll = float(max(1, min(math.floor(safe), defaults.poll_timeout)))
        if safe < DEFAULT_IDLE_TIMEOUT / 3:  # WebSocket keepalives come every third of -t
            keepalive_t = float(max(3, math.floor(safe) * 3))
    elif idle is not None and idle.tried_s[-1] < defaults.poll_timeout + 5:
        notes.append(
            f"idle requests survived every hold tried (up to {idle.tried_s[-1]:g} s); "
            f"--max-idle 60 tests the {defaults.poll_timeout:g} s poll default"
        )
    http_flags = [*(["--http-max-body", str(max_body)] if max_body != defaults.max_body else [])]
    if poll != defaults.poll_timeout:
        http_flags += ["--http-poll-timeout", f"{poll:g}"]
    t_flags = ["-t", f"{keepalive_t:g}"] if keepalive_t else []
    tail = [*tls, *FORWARD, url, "-p", "PASSWORD"]
    transport = "ws" if found.websocket.passes else "http"
    if transport == "ws":
        client = ["flyway", "-w", *t_flags, *tail]
        if "--proxy" in path_options:
            notes.append("WebSocket does not use --proxy: it connects to the server directly")
    else:
        client = ["flyway", *http_flags, *path_options, *tail]
    server: list[str] = []
    if idle is not None and poll < idle.server_poll_timeout_s:
        server += ["--http-poll-timeout", f"{poll:g}"]
    if body is not None and body.limit == "path" and max_body < body.server_max_body:
        server += ["--http-max-body", str(max_body)]
    if not found.http_post:
        notes.append(
            "the server does not answer HTTP POST probes: it runs without flyway-http-post, "
            "or with one older than flyway doctor"
        )
    return Advice(
        transport,
        max_body,
        poll,
        keepalive_t,
        found.streaming.prompt if found.streaming else None,
        shlex.join(client),
        shlex.join(["flyway", "--auto", *t_flags, *http_flags, *path_options, *tail]),
        " ".join(server) or None,
        tuple(notes),
    )


def _size(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            text = f"{n / (1 << shift):.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


def _rows(d: Findings, advice: Advice) -> list[tuple[str, str, str]]:
    ws = d.websocket
    verdict = "passes: " if ws.passes else "fails: "
    rows = [("WebSocket", verdict + ws.detail, "-w works" if ws.passes else "use HTTP POST")]
    rt, st, body, idle = d.round_trip, d.streaming, d.post_body, d.idle
    if rt is None or st is None or body is None or idle is None:
        return [("HTTP POST", "no flyway answer to PING", "use -w"), *rows]
    if rt.p50_ms is not None and rt.p90_ms is not None:
        result = f"{rt.p50_ms:.1f} ms median, {rt.p90_ms:.1f} ms p90 ({rt.samples} PINGs)"
    else:
        result = "every PING was lost"
    if rt.plain_get_ms is not None:
        result += f"; GET / {rt.plain_get_ms:.1f} ms (HTTP {rt.plain_get_status})"
    rows.insert(0, ("round trip", result, f"{rt.lost} lost" if rt.lost else ""))
    so = {True: "polls are streamed", False: "one whole answer per poll", None: ""}[st.prompt]
    rows.append(("streamed responses", st.detail, so))
    if body.limit == "server":
        result = (
            f"all up to the server's own cap ({_size(body.server_max_body)} + 4 KiB: "
            f"--http-max-body {body.server_max_body})"
        )
    elif body.limit == "path":
        failed = _size(body.first_failing or 0)
        result = f"{_size(body.largest_passing)}; {failed} failed: {body.failure}"
    else:
        result = f"at least {_size(body.largest_passing)} (larger not tried)"
    rows.append(("largest POST body", result, _option("--http-max-body", advice.http_max_body)))
    tried = ", ".join(f"{hold:g}" for hold in idle.tried_s)
    if idle.cut_after_s is None:
        result = f"every hold came back ({tried} s)"
    else:
        longest = f"{idle.longest_s:g} s came back" if idle.longest_s else "none came back"
        result = f"{longest}; a longer one was cut after {idle.cut_after_s:g} s: {idle.cut_reason}"
    so = _option("--http-poll-timeout", advice.http_poll_timeout)
    if advice.idle_timeout and d.websocket.passes:
        so += f"; with -w: -t {advice.idle_timeout:g}"
    rows.append(("idle request", result, so))
    return rows


def _option(name: str, value: float) -> str:
    default = {"--http-max-body": Limits().max_body, "--http-poll-timeout": Limits().poll_timeout}
    text = str(int(value)) if float(value).is_integer() else f"{value:g}"
    return f"{name} {text}" + (" (default)" if value == default[name] else "")


def show(d: Findings, advice: Advice) -> None:
    """Print the findings as a table, then the commands to use."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Console(highlight=False)
    table = Table(title=f"flyway doctor: {escape(d.server)}")
    for column in ("check", "result", "so"):
        table.add_column(column)
    for check, result, so in _rows(d, advice):
        table.add_row(check, escape(result), escape(so))
    out.print(table)
    name = "WebSocket" if advice.transport == "ws" else "HTTP POST"
    out.print(f"[bold]use[/] ({name}):  {escape(advice.client)}")
    out.print(f"[dim]or let the client choose at each connect:  {escape(advice.auto)}[/]")
    if advice.server:
        out.print(
            f"[yellow]server (for HTTP POST): add {escape(advice.server)} to its command line[/]"
        )
        out.print(
            "[dim]  (empty polls wait the server's own timeout; its max body bounds answers)[/]"
        )
    for note in advice.notes:
        out.print(f"[dim]note: {escape(note)}[/]")
