"""The ``kcp-lossy`` column: ``-K`` through the seeded lossy UDP relay, as on a bad link.

The same flyway server as every column; between it and the client runs
``tests/intermediaries/lossy_udp.py`` in a process of its own, dropping 5% of the datagrams
and delaying each by 30 ms, each way. The relay writes what it saw (datagrams and bytes per
direction, before loss) to a file, and the two KCP endpoints what they sent again
(``FLYWAY_KCP_STATS``: the client's resends are the upload's, the server's the download's);
``wire()`` asks all three, so each workload's result carries what crossed the link
(``wire``) and the bytes resent, which the retransmit target takes as they are.
The client asks for FEC 10+3 (``--kcp-fec``, also the default); the ``kcp-lossy-nofec``
column (``LossyKcpNoFecTunnel``) is the same link with ``--kcp-fec off``, so one run measures
FEC both ways. Round trips take 64 ms here, so the latency rows take a twentieth of the
plan's samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import ROOT
from .processes import Tunnel, first_line, free_ports
from .wire import HOST, TARGETS

__all__ = [
    "FEC",
    "LOSS",
    "ONE_WAY_DELAY",
    "LossyKcpNoFecTunnel",
    "LossyKcpTunnel",
    "overhead",
    "retransmitted",
]

LOSS = 0.05
ONE_WAY_DELAY = 0.030  # seconds
SEED = 13
RELAY = ROOT / "tests" / "intermediaries" / "lossy_udp.py"
FEC = (10, 3)  # data and parity datagrams per group, asked for by the client
STATS_VARIABLE = "FLYWAY_KCP_STATS"  # flyway_kcp.stats: where the endpoints write their counters


def retransmitted(wire: dict[str, int], direction: str, payload: int) -> float | None:
    """The share of ``payload`` that was sent again, as the sending endpoint counted it.

    KCP's output counts each data segment it sends again (a timeout or a fast resend) and its
    bytes; None if the endpoint kept no counters.
    """
    resent = wire.get(f"{direction}_resent_bytes")
    return None if resent is None else resent / payload


def overhead(wire: dict[str, int], direction: str, payload: int) -> float:
    """Everything one way beyond the payload (parity, headers, resends) as its share."""
    return wire[f"{direction}_bytes"] / payload - 1


@dataclass
class LossyKcpTunnel(Tunnel):
    """One flyway server, the lossy relay in front of its UDP port, a ``-K`` client via it."""

    metrics: ClassVar[tuple[str, ...] | None] = (
        "upload",
        "download",
        "duplex",
        "rtt",
        "connect",
        "parallel",
    )
    latency_share: ClassVar[float] = 0.05
    fec: ClassVar[str] = ",".join(map(str, FEC))  # the client's --kcp-fec
    relay: subprocess.Popen[bytes] | None = None
    stats: Path | None = None
    _asked: int = 0

    @property
    def relay_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-relay.log"

    async def start(self, target_ports: dict[str, int]) -> bool:
        """Start server, relay and client; False (``skipped`` says why) if the column cannot run."""
        password = secrets.token_urlsafe(12)
        server_port, *local = free_ports(1 + len(TARGETS))
        window = ["-W", str(self.window)] if self.window else []
        self.stats = Path(tempfile.mkdtemp(prefix="flyway-bench-")) / "relay.json"
        self.env_extra = {**self.env_extra, STATS_VARIABLE: str(self.stats.parent)}
        if not await self._start_server(server_port, password, window):
            return False
        delay = ["--loss", str(LOSS), "--delay", str(ONE_WAY_DELAY), "--seed", str(SEED)]
        self.relay = self._popen(
            [
                self.python,
                str(RELAY),
                "--target",
                str(server_port),
                *delay,
                "--stats",
                str(self.stats),
            ],
            self.relay_log,
        )
        relay_port = await self._relay_port()
        if relay_port is None:
            self.skipped = f"the lossy relay did not start: {first_line(self.relay_log)}"
            return False
        self.forwards = dict(zip(TARGETS, local, strict=True))
        rules = [
            a
            for name, lport in self.forwards.items()
            for a in ("-L", f"{lport}:{HOST}:{target_ports[name]}")
        ]
        self.client = self._spawn(
            [
                *self.client_flags,
                "--kcp-fec",
                self.fec,
                "-q",
                *window,
                *rules,
                f"{HOST}:{relay_port}",
                "-p",
                password,
            ],
            self.client_log,
        )
        # The client opens streams only on a live session, and its hello may need a resend
        # or two across the lossy link: give the first echo a few tries.
        for _ in range(5):
            if await self._started(local):
                self.skipped = ""
                return True
            if self.alive():
                break
            await asyncio.sleep(0.5)
        return False

    async def _relay_port(self) -> int | None:
        assert self.relay is not None
        for _ in range(100):
            line = first_line(self.relay_log)
            if line.isdigit():
                return int(line)
            if self.relay.poll() is not None:
                return None
            await asyncio.sleep(0.1)
        return None

    def wire(self) -> dict[str, int]:
        """The counters now: relay and endpoints are signalled, and answer within milliseconds."""
        if self.stats is None or self.relay is None or self.relay.poll() is not None:
            return {}
        self._asked += 1
        self.relay.send_signal(signal.SIGUSR1)
        # The server's resends are the download's, the client's the upload's.
        endpoints = [
            (direction, role, process, self.stats.parent / f"kcp-{process.pid}.json")
            for direction, role, process in (
                ("down", "server", self.server),
                ("up", "client", self.client),
            )
            if process is not None and process.poll() is None
        ]
        for _, _, process, _ in endpoints:
            process.send_signal(signal.SIGUSR1)
        relay = self._answer(self.stats)
        if not relay:
            return {}
        counts = {
            f"{direction}_{key}": relay[direction][key]
            for direction in ("up", "down")
            for key in ("datagrams", "bytes", "lost")
        }
        for direction, role, _, path in endpoints:
            mine = self._answer(path).get(role, {})
            for key in ("resent_segments", "resent_bytes"):
                if key in mine:
                    counts[f"{direction}_{key}"] = mine[key]
        return counts

    def _answer(self, path: Path) -> dict[str, Any]:
        """What a signalled process wrote to ``path`` for this ask, or {} after 2 s."""
        deadline = time.monotonic() + 2
        tallies: dict[str, Any] = {}
        while time.monotonic() < deadline:  # a blocking wait, between measurements only
            with contextlib.suppress(OSError, ValueError):
                tallies = json.loads(path.read_text())
                if tallies.get("asked", 0) >= self._asked:
                    return tallies
            time.sleep(0.002)
        return {}

    def alive(self) -> str:
        dead = super().alive()
        if self.relay is not None and self.relay.poll() is not None:
            dead = "; ".join(filter(None, [dead, f"relay exited with {self.relay.returncode}"]))
        return dead

    async def stop(self) -> None:
        await super().stop()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            for _ in range(100):
                if self.relay.poll() is not None:
                    return
                await asyncio.sleep(0.05)
            self.relay.kill()
            self.relay.wait()

    def kill_now(self) -> None:
        super().kill_now()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.kill()


@dataclass
class LossyKcpNoFecTunnel(LossyKcpTunnel):
    """The same link and relay seed, the client asking for no FEC (``--kcp-fec off``)."""

    fec: ClassVar[str] = "off"
