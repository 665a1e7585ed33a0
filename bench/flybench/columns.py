"""The registry of columns: which tunnels a run can measure, and how each one is started.

A new transport is one ``Column`` row in ``COLUMNS``: the ``--transport`` name, the
client flag that picks it (the server serves every installed transport) and, if it
starts differently from ``flyway SERVER -p PW`` plus ``flyway FLAG -L ... SERVER -p PW``,
its own ``Tunnel`` subclass (one new module, like relays.py) as ``kind``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .hops import Intermediaries
from .lossy import LossyKcpNoFecTunnel, LossyKcpTunnel
from .processes import Tunnel
from .relays import BARE, BARE_MODES, BARE_WS, BareRelay, BareWebSocketRelay
from .socks import Socks5Tunnel

__all__ = ["COLUMNS", "DEFAULT_TRANSPORTS", "Column", "build_columns", "transport_help"]


@dataclass(frozen=True, slots=True)
class Column:
    """One tunnel column: a transport, picked by client flags, maybe behind an intermediary."""

    name: str  # the --transport value and the column's label
    transport: str  # the transport's name in `flyway plugins --json`
    flags: tuple[str, ...]  # goflyway-style client flags that pick it; () = the default (http)
    how: str  # for --help: what the client is given
    via: str = ""  # "squid" (the client's --proxy) or "nginx" (the client dials it instead)
    default: bool = False  # measured when no --transport is given
    kind: type[Tunnel] = Tunnel


# Columns with a real HTTP intermediary (tests/intermediaries) between client and
# server: squid as the client's --proxy (it refuses CONNECT), or nginx as a buffering
# reverse proxy (a CDN edge) that the client dials instead of the server.
COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("ws", "ws", ("-w",), "-w", default=True),
        Column("http", "http", (), "no flag", default=True),
        Column("http-squid", "http", (), "http with --proxy SQUID", via="squid", default=True),
        Column(
            "http-nginx",
            "http",
            (),
            "http dialing nginx in front of the server",
            via="nginx",
            default=True,
        ),
        Column("kcp", "kcp", ("-K",), "-K"),
        # -K through tests/intermediaries/lossy_udp.py: 5% loss and 30 ms each way.
        Column(
            "kcp-lossy",
            "kcp",
            ("-K",),
            "-K via a lossy UDP relay (5% loss, 30 ms each way)",
            kind=LossyKcpTunnel,
        ),
        Column(
            "kcp-lossy-nofec",
            "kcp",
            ("-K",),
            "kcp-lossy with --kcp-fec off",
            kind=LossyKcpNoFecTunnel,
        ),
        # -D instead of -L, over ws: compare with the ws column of the same run.
        Column(
            "socks5", "ws", ("-w",), "-w -D PORT, the driver speaking SOCKS5", kind=Socks5Tunnel
        ),
    )
}
DEFAULT_TRANSPORTS = [c.name for c in COLUMNS.values() if c.default]


def transport_help() -> str:
    """The ``--transport`` help: the default columns, then what each column's client gets."""
    each = ", ".join(f"{c.name}={c.how}" for c in COLUMNS.values())
    text = f"column to measure (repeatable; default: {' '.join(DEFAULT_TRANSPORTS)}): {each}"
    return text.replace("%", "%%")  # argparse formats help strings with %


def build_columns(
    args: argparse.Namespace, hops: Intermediaries, installed: list[str] | None
) -> tuple[list[Tunnel], str]:
    """One ``Tunnel`` per column asked for (skipped ones say why), and the uvloop shim dir.

    ``installed`` lists the transports `flyway plugins --json` reports (None: unknown).
    The shim is a directory with a ``uvloop`` that fails to import, for ``--uvloop``'s
    extra ``NAME/asyncio`` columns ('' when none was made; the caller removes it).
    """
    shim = ""
    tunnels: list[Tunnel] = []
    wanted = args.transport or DEFAULT_TRANSPORTS
    if not args.no_bare_relay:
        for mode in dict.fromkeys(args.bare_relay or ["protocols"]):
            label = BARE if mode == "protocols" else f"{BARE} {mode}"
            tunnels.append(
                BareRelay(
                    label=label,
                    transport=BARE,
                    python=args.python,
                    log_dir=args.log_dir,
                    window=None,
                    relay_flags=BARE_MODES[mode],
                )
            )
        if "ws" in wanted:
            tunnels.append(
                BareWebSocketRelay(
                    label=BARE_WS,
                    transport=BARE_WS,
                    python=args.python,
                    log_dir=args.log_dir,
                    window=None,
                )
            )
    for name in dict.fromkeys(wanted):
        column = COLUMNS[name]
        tunnels.append(_tunnel(column, name, {}, args, hops))
        if installed is not None and column.transport not in installed and not column.flags:
            # Without a flag the client silently picks another transport: do not mislabel it.
            tunnels[-1].skipped = (
                f"transport {column.transport!r} is not installed"
                f" (installed: {', '.join(installed) or 'none'})"
                "; the client would fall back to another one"
            )
            continue
        if column.via and (why := hops.missing(column.via)):
            tunnels[-1].skipped = f"needs {column.via}: {why}"
            continue
        if args.uvloop and args.flyway_uvloop:
            if not shim:
                shim = tempfile.mkdtemp(prefix="flyway-bench-")
                Path(shim, "uvloop.py").write_text('raise ImportError("hidden by bench/run.py")\n')
            path = os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH", "")]))
            tunnels.append(_tunnel(column, f"{name}/asyncio", {"PYTHONPATH": path}, args, hops))
    return tunnels, shim


def _tunnel(
    column: Column,
    label: str,
    env: dict[str, str],
    args: argparse.Namespace,
    hops: Intermediaries,
) -> Tunnel:
    return column.kind(
        label=label,
        transport=column.transport,
        python=args.python,
        log_dir=args.log_dir,
        window=args.window,
        client_flags=list(column.flags),
        env_extra=env,
        via=column.via,
        hops=hops,
    )
