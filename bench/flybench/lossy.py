"""The ``kcp-lossy`` column: ``-K`` through the seeded lossy UDP relay, as on a bad link.

The same flyway server as every column; between it and the client runs
``tests/intermediaries/lossy_udp.py`` in a process of its own, dropping 5% of the datagrams
and delaying each by 30 ms, each way. The relay writes what it saw (datagrams and bytes per
direction, before loss) to a file; ``wire()`` reads it, so each workload's result carries
what crossed the link (``wire``), from which the targets estimate the retransmitted share.
Round trips take 64 ms here, so the latency rows take a twentieth of the plan's samples.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from . import ROOT
from .processes import Tunnel, first_line, free_ports
from .wire import HOST, TARGETS

__all__ = ["LOSS", "ONE_WAY_DELAY", "SEAL_AND_HEADER", "LossyKcpTunnel", "retransmitted"]

LOSS = 0.05
ONE_WAY_DELAY = 0.030  # seconds
SEED = 13
RELAY = ROOT / "tests" / "intermediaries" / "lossy_udp.py"
SEAL_AND_HEADER = 32 + 24  # per datagram: the seal (flyway) and one KCP segment header


def retransmitted(wire: dict[str, int], direction: str, payload: int) -> float:
    """The share of ``payload`` sent again: bytes sent one way less headers and payload."""
    sent = wire[f"{direction}_bytes"] - wire[f"{direction}_datagrams"] * SEAL_AND_HEADER
    return (sent - payload) / payload


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
    relay: subprocess.Popen[bytes] | None = None
    stats: Path | None = None

    @property
    def relay_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-relay.log"

    async def start(self, target_ports: dict[str, int]) -> bool:
        """Start server, relay and client; False (``skipped`` says why) if the column cannot run."""
        password = secrets.token_urlsafe(12)
        server_port, *local = free_ports(1 + len(TARGETS))
        window = ["-W", str(self.window)] if self.window else []
        if not await self._start_server(server_port, password, window):
            return False
        self.stats = Path(tempfile.mkdtemp(prefix="flyway-bench-")) / "relay.json"
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
            [*self.client_flags, "-q", *window, *rules, f"{HOST}:{relay_port}", "-p", password],
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
        if self.stats is None or not self.stats.exists():
            return {}
        tallies = json.loads(self.stats.read_text())
        return {
            f"{direction}_{key}": tallies[direction][key]
            for direction in ("up", "down")
            for key in ("datagrams", "bytes", "lost")
        }

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
