"""The direct dialer's failures as typed reset reasons, on real sockets."""

from __future__ import annotations

import subprocess
import sys

from flyway_core.protocol import ResetReason

# In a network namespace of its own (only a loopback, and that down), no network is routed.
_DIAL = """
import asyncio
from flyway_core import Address, TargetError
from flyway_core.direct import DIRECT
from flyway_core.link import LocalLink

async def main():
    try:
        await DIRECT.connect(Address("192.0.2.1", 80), LocalLink())
    except TargetError as exc:
        print(exc.reason, exc)

asyncio.run(main())
"""


def test_a_network_without_a_route_is_network_unreachable() -> None:
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _DIAL],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reason, _, text = done.stdout.strip().partition(" ")
    assert int(reason) == ResetReason.NETWORK_UNREACHABLE
    assert text == "Network is unreachable"
