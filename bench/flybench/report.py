"""The report: the table of metrics by column, the targets, the notes and the JSON file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from . import ROOT
from .console import out
from .hops import Intermediaries
from .measure import Plan
from .processes import Tunnel, read_lines
from .target_servers import TargetServers
from .wire import MB

__all__ = ["ROWS", "print_notes", "print_table", "print_targets", "write_report"]


ROWS: list[tuple[str, str, str, str]] = [
    # (row title, metric, field, how to compare tunnel with direct)
    ("upload MB/s", "upload", "mbps", "ratio"),
    ("download MB/s", "download", "mbps", "ratio"),
    ("duplex up MB/s", "duplex", "up_mbps", "ratio"),
    ("duplex down MB/s", "duplex", "down_mbps", "ratio"),
    ("transfer size MB", "upload", "bytes", ""),
    ("64 B round trip p50 µs", "rtt", "p50_us", "delta"),
    ("64 B round trip p99 µs", "rtt", "p99_us", "delta"),
    ("connect + 1st byte p50 µs", "connect", "p50_us", "delta"),
    ("connect + 1st byte p99 µs", "connect", "p99_us", "delta"),
    ("64 B UDP round trip p50 µs", "udp_rtt", "p50_us", "delta"),
    ("64 B UDP round trip p99 µs", "udp_rtt", "p99_us", "delta"),
    ("200 \u00d7 64 KiB echo verified", "parallel", "verified_count", ""),
    ("200 \u00d7 64 KiB echo seconds", "parallel", "seconds", "ratio"),
    ("server KiB / idle conn (1000)", "memory", "server_kib_per_conn", ""),
    ("client KiB / idle conn (1000)", "memory", "client_kib_per_conn", ""),
    ("server RSS MiB before → with", "memory", "server_rss_kib", ""),
    ("1000 idle conns: open / release s", "memory", "open_seconds", ""),
]


def _cell(metric: str, fieldname: str, r: dict[str, Any] | None) -> tuple[str, float | None]:
    if not r:
        return "—", None
    if "error" in r:
        return "[red]error[/]", None
    value = r.get(fieldname)
    if value is None:
        return "—", None
    ok = r.get("verified", True)
    if metric == "duplex":
        ok = r.get("up_verified" if fieldname.startswith("up") else "down_verified", ok)
    if fieldname == "bytes":
        text = f"{value / MB:.0f}"
    elif fieldname == "verified_count":
        text = f"{value}/{r['connections']}"
    elif fieldname == "server_rss_kib":
        text = f"{value['before'] / 1024:.1f} → {value['with'] / 1024:.1f}"
    elif fieldname == "open_seconds":
        text = f"{value:.2f} / {r['release_seconds']:.2f}"
    elif fieldname.endswith("_us"):
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    if not ok:
        text = f"[red]{text} ✗[/]"
    return text, float(value) if isinstance(value, int | float) else None


def print_table(results: dict[str, dict[str, Any]], live: list[Tunnel]) -> None:
    """Print the metrics table: one row per ``ROWS`` entry, direct then each live column."""
    table = Table(title="flyway benchmark: direct vs through the tunnel", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("direct", justify="right")
    for t in live:
        table.add_column(t.header.format(t.label), justify="right")
        table.add_column(f"ratio ({t.label})", justify="right", style="cyan")
    for title, metric, fieldname, compare in ROWS:
        direct_text, direct_value = _cell(metric, fieldname, results["direct"].get(metric))
        row = [title, direct_text]
        for t in live:
            text, value = _cell(metric, fieldname, results[t.label].get(metric))
            row.append(text)
            if compare == "ratio" and value is not None and direct_value:
                row.append(f"{value / direct_value:.2f}\u00d7")
            elif compare == "delta" and value is not None and direct_value is not None:
                row.append(f"{value - direct_value:+,.0f} µs")
            else:
                row.append("")
        table.add_row(*row)
    out.print(table)


def print_notes(report: dict[str, Any], tunnels: list[Tunnel], hops: Intermediaries) -> list[str]:
    """Print the notes under the table (skips, log warnings, CPU per GB); return the problems."""
    problems: list[str] = []
    for name, lines in hops.notable().items():
        out.print(
            f"[yellow]{name} logged {len(lines)} warning/error line(s)[/] "
            f"({hops.log_path(name)}), first: {lines[0][:200]}"
        )
    for label, reason in report["skipped"].items():
        out.print(f"[yellow]skipped {label}:[/] {reason}")
    for label, metrics in report["results"].items():
        for metric, r in metrics.items():
            if "error" in r:
                problems.append(f"{label} {metric}: {r['error']}")
            elif not r.get("verified", True):
                problems.append(
                    f"{label} {metric}: not verified: {r.get('detail') or r.get('failures')}"
                )
    problems += [f"target: {e}" for e in report["target_errors"][:10]]
    for t in tunnels:
        if t.skipped:
            continue
        for name, path in (("server", t.server_log), ("client", t.client_log)):
            lines = read_lines(path)
            if lines:
                problems.append(
                    f"{t.label} {name} wrote {len(lines)} line(s) with -q, first: {lines[0][:160]}"
                )
        for name, code in t.exit_codes.items():
            if code != 0:
                problems.append(f"{t.label} {name} exit after SIGTERM: {code}")
    for t in tunnels:
        if t.skipped:
            continue
        cpu = {
            m: r.get("cpu_seconds", {})
            for m, r in report["results"][t.label].items()
            if m in ("upload", "download", "duplex") and "error" not in r
        }
        parts = []
        for m, c in cpu.items():
            r = report["results"][t.label][m]
            gb = r["bytes"] / 1e9 * (2 if m == "duplex" else 1)
            parts.append(f"{m} {c.get('server', 0) / gb:.1f}+{c.get('client', 0) / gb:.1f}")
        if parts:
            out.print(f"[dim]{t.label}: CPU s per GB moved (server+client): {', '.join(parts)}[/]")
    for p in problems:
        out.print(f"[red]problem:[/] {p}")
    return problems


def print_targets(checks: list[dict[str, Any]], references: list[str]) -> None:
    """Print each target as PASS/FAIL/n/a, then the ref. lines."""
    out.print("[bold]targets[/] (from this run's numbers)")
    for c in checks:
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[dim]n/a [/]"}[c["pass"]]
        out.print(f"  {mark}  {c['target']}: {c['measured']}")
    for line in references:
        out.print(f"  [dim]ref.[/]  {line}")


def write_report(
    args: argparse.Namespace,
    plan: Plan,
    tunnels: list[Tunnel],
    results: dict[str, Any],
    targets: TargetServers,
    loop_name: str,
    started: float,
) -> dict[str, Any]:
    """Write the JSON report (without targets, which the caller adds) and return it."""
    logs = {
        t.label: {
            "server": read_lines(t.server_log),
            "client": read_lines(t.client_log),
            "exit": t.exit_codes,
        }
        for t in tunnels
    }
    for name in args.hops.children_closed:
        logs[name] = {"log": read_lines(args.hops.log_path(name))[-200:]}
    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "flyway_python": args.python,
            "flyway_uvloop": args.flyway_uvloop,
            "driver_loop": loop_name,
            "git": _git_revision(),
            "quick": args.quick,
            "window": args.window,
            "fd_limit": args.fd_limit,
            "plan": plan.__dict__,
        },
        "transports": [t.label for t in tunnels],
        "skipped": {t.label: t.skipped for t in tunnels if t.skipped},
        "results": results,
        "target_errors": targets.errors,
        "process_output": logs,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _git_revision() -> str:
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
        return rev.stdout.strip()
    return ""
