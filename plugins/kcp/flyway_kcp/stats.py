"""What this process's KCP conversations sent and sent again, for a log line and the bench.

Each conversation is tracked from its start; when it ends its counters join the totals of its
role (``client`` or ``server``) and one debug line says what it cost. With
``FLYWAY_KCP_STATS=DIR`` in the environment (the bench sets it), a SIGUSR1 makes the process
write the totals so far, live conversations included, to ``DIR/kcp-<pid>.json``, with
``asked`` counting the signals answered, as the lossy relay does for its own counters.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flyway_kcp.carrier import KcpCarrier

__all__ = ["STATS_VARIABLE", "KcpTally", "TALLY", "install_stats_signal"]

STATS_VARIABLE = "FLYWAY_KCP_STATS"
log = logging.getLogger("flyway.kcp")


def _counters(carrier: KcpCarrier) -> Counter[str]:
    output = carrier.output
    return Counter(
        sessions=1,
        datagrams=output.sent,
        bytes=output.bytes_sent,
        resent_segments=output.resent_segments,
        resent_bytes=output.resent_bytes,
        timeouts=carrier.timeouts,
        recovered=carrier.recovered,
    )


class KcpTally:
    """Counters per role: the ended conversations' sums, and the live ones."""

    def __init__(self) -> None:
        self._live: dict[KcpCarrier, str] = {}
        self._ended: dict[str, Counter[str]] = {"client": Counter(), "server": Counter()}
        self.asked = 0

    def track(self, carrier: KcpCarrier, role: str) -> None:
        """Count ``carrier`` under ``role`` from now on."""
        self._live[carrier] = role

    def ended(self, carrier: KcpCarrier) -> None:
        """Fold an ended conversation into its role's totals, and say what it cost."""
        role = self._live.pop(carrier, None)
        if role is None:
            return
        counters = _counters(carrier)
        self._ended[role] += counters
        log.debug(
            "kcp %s session ended: sent %d datagrams (%d bytes), resent %d segments "
            "(%d bytes, %d after a timeout), FEC rebuilt %d",
            role,
            counters["datagrams"],
            counters["bytes"],
            counters["resent_segments"],
            counters["resent_bytes"],
            counters["timeouts"],
            counters["recovered"],
        )

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Each role's totals so far, live conversations included."""
        totals = {role: Counter(counters) for role, counters in self._ended.items()}
        for carrier, role in self._live.items():
            totals[role] += _counters(carrier)
        return {role: dict(counters) for role, counters in totals.items()}


TALLY = KcpTally()  # per process, as the signal that reads it is


def install_stats_signal() -> None:
    """If ``FLYWAY_KCP_STATS`` names a directory, answer SIGUSR1 with the totals there."""
    where = os.environ.get(STATS_VARIABLE)
    if not where:
        return
    path = Path(where) / f"kcp-{os.getpid()}.json"

    def dump(signum: int, frame: FrameType | None) -> None:
        TALLY.asked += 1
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"asked": TALLY.asked, **TALLY.snapshot()}))
        temporary.replace(path)

    signal.signal(signal.SIGUSR1, dump)
