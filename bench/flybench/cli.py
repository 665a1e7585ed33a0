"""The command line: parse the flags, prepare the run, measure, report, exit 0/1 (2: no flyway)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import ROOT
from .columns import COLUMNS, build_columns, transport_help
from .console import out, progress
from .hops import Intermediaries
from .measure import FULL, QUICK, Plan, run
from .processes import Tunnel
from .relays import BARE_MODES
from .report import print_notes, print_table, print_targets, write_report
from .targets import evaluate_targets, reference_lines

__all__ = ["build_parser", "main", "prepare"]


def _raise_fd_limit(want: int = 65536) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _installed_transports(python: str) -> list[str] | None:
    """Transport names from `flyway plugins --json` (None if that cannot be read)."""
    with contextlib.suppress(Exception):
        listing = subprocess.run(
            [python, "-m", "flyway_core", "plugins", "--json"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            timeout=30,
        )
        names = []
        for plugin in json.loads(listing.stdout):
            for item in plugin.get("provides", []):
                if item.startswith("transports:"):
                    names += [x.split()[0] for x in item.split(":", 1)[1].split(",") if x.strip()]
        return names
    return None


def _has_uvloop(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import uvloop"], capture_output=True, check=False)
    return probe.returncode == 0


def prepare(args: argparse.Namespace) -> tuple[Plan, list[Tunnel], str] | None:
    """Everything before the event loop: plan, fd limit, checks, one Tunnel per column."""
    plan = replace(QUICK if args.quick else FULL)
    if args.size:
        plan.max_mb = args.size
    limits = _raise_fd_limit()
    if limits[0] < 4 * plan.idle + 256:
        progress.print(f"[yellow]fd limit {limits[0]} is low for {plan.idle} idle connections[/]")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for stale in [
        *args.log_dir.glob("*-server.log"),
        *args.log_dir.glob("*-client.log"),
        *args.log_dir.glob("*nginx.log"),
        *args.log_dir.glob("squid.log"),
    ]:
        stale.unlink()
    check = subprocess.run(
        [args.python, "-c", "import flyway_core.cli"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        progress.print(f"[red]{args.python} cannot import flyway_core:[/] {last}")
        return None
    args.flyway_uvloop = _has_uvloop(args.python)
    installed = _installed_transports(args.python)
    if args.uvloop and not args.flyway_uvloop:
        progress.print(
            "[yellow]--uvloop: uvloop is not installed for flyway; nothing to compare[/]"
        )
    args.hops = Intermediaries(args.log_dir)
    tunnels, shim = build_columns(args, args.hops, installed)
    args.fd_limit = limits[0]
    return plan, tunnels, shim


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags of ``bench/run.py``; ``description`` is its docstring (the --help text)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--transport",
        action="append",
        choices=sorted(COLUMNS),
        help=transport_help(),
    )
    parser.add_argument(
        "--no-bare-relay",
        action="store_true",
        help=(
            "leave out the bare relay reference columns (bench/bare_relay.py, and"
            " bench/ws_relay.py beside ws)"
        ),
    )
    parser.add_argument(
        "--bare-relay",
        action="append",
        choices=list(BARE_MODES),
        metavar="MODE",
        help=(
            "bare relay variant, repeatable (default protocols, the floor): "
            + ", ".join(BARE_MODES)
        ),
    )
    parser.add_argument("--quick", action="store_true", help="smaller transfers and fewer samples")
    parser.add_argument(
        "--json",
        default=str(ROOT / "bench" / "results" / "latest.json"),
        help="where to write results",
    )
    parser.add_argument(
        "--size", type=int, help="largest single-direction transfer in MB (default 200, quick 32)"
    )
    parser.add_argument(
        "-W", "--window", type=int, help="pass -W BYTES (per-stream window) to server and client"
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="also run each transport with uvloop hidden from flyway",
    )
    default_python = ROOT / ".venv" / "bin" / "python"
    parser.add_argument(
        "--python",
        default=str(default_python if default_python.exists() else sys.executable),
        help="interpreter that runs `-m flyway_core` (default .venv/bin/python)",
    )
    parser.add_argument(
        "--deadline", type=float, default=600, help="give up measuring after this many seconds"
    )
    return parser


def main(description: str) -> None:
    """Run the benchmark with the command line's flags; exit 1 if a measurement failed."""
    args = build_parser(description).parse_args()
    args.log_dir = Path(args.json).resolve().parent / "logs"
    prepared = prepare(args)
    if prepared is None:
        sys.exit(2)
    plan, tunnels, shim = prepared
    results: dict[str, Any] = {}
    started = time.time()
    try:
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            targets, loop_name = asyncio.run(run(args, plan, tunnels, results))
        else:
            targets, loop_name = uvloop.run(run(args, plan, tunnels, results))
    except KeyboardInterrupt:
        progress.print("[yellow]interrupted; flyway processes stopped[/]")
        sys.exit(130)
    finally:
        for t in tunnels:
            t.kill_now()
        args.hops.close()
        if shim:
            shutil.rmtree(shim, ignore_errors=True)
    live = [t for t in tunnels if not t.skipped]
    checks, references = evaluate_targets(results, live), reference_lines(results, live)
    report = write_report(args, plan, tunnels, results, targets, loop_name, started)
    report["targets"] = checks
    report["reference"] = references
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(results, live)
    print_targets(checks, references)
    problems = print_notes(report, tunnels, args.hops)
    out.print(f"[dim]JSON: {args.json}   logs: {args.log_dir}[/]")
    sys.exit(1 if problems else 0)
