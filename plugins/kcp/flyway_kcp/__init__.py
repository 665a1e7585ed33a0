"""flyway transport ``kcp`` (``-K``): the tunnel over KCP, an ARQ protocol on UDP.

For lossy, high-latency links. The server listens on UDP on its HTTP port's number; every
datagram is sealed, and one that does not authenticate gets no answer at all.
"""

from __future__ import annotations

import click

from flyway_core import Settings, hookimpl
from flyway_kcp.config import (
    DEFAULT_FEC,
    DEFAULT_MODE,
    DEFAULT_MTU,
    DEFAULT_RCVWND,
    DEFAULT_SNDWND,
    MODES,
    KcpConfig,
)
from flyway_kcp.stats import install_stats_signal
from flyway_kcp.transport import KcpTransport

__all__ = ["KcpConfig", "KcpTransport"]


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["--kcp-mode"],
            type=click.Choice(list(MODES)),
            default=DEFAULT_MODE,
            show_default=True,
            help="KCP preset, as kcptun's: (nodelay, interval, resend, nc) = normal (0,40,2,1), "
            "fast (0,30,2,1), fast2 (1,20,2,1), fast3 (1,10,2,1).",
        ),
        click.Option(
            ["--kcp-mtu"],
            type=int,
            default=DEFAULT_MTU,
            show_default=True,
            help="Largest UDP payload in bytes, seal included.",
        ),
        click.Option(
            ["--kcp-sndwnd"],
            type=int,
            default=DEFAULT_SNDWND,
            show_default=True,
            help="KCP send window in segments.",
        ),
        click.Option(
            ["--kcp-fec"],
            default="{},{}".format(*DEFAULT_FEC),
            show_default=True,
            metavar="K,M",
            help="Client: forward error correction, M parity datagrams after every K "
            "(Reed-Solomon; the server follows the client), or off.",
        ),
        click.Option(
            ["--kcp-rcvwnd"],
            type=int,
            default=DEFAULT_RCVWND,
            show_default=True,
            help="KCP receive window in segments.",
        ),
    ]


@hookimpl
def register_transports(settings: Settings) -> list[KcpTransport]:
    install_stats_signal()  # only with FLYWAY_KCP_STATS set (the bench's counters)
    return [KcpTransport(KcpConfig.from_settings(settings))]
