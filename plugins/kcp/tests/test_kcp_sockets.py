"""The UDP sockets both ends really open: buffers of the intended size."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import flyway_kcp.client
import flyway_kcp.server
import pytest
from flyway_kcp.udp import BUFFER, udp_socket
from intermediaries.lossy_udp import Impairment
from kcp_pairs import kcp_pair

CLEAN = Impairment()


def _kernel_cap(name: str) -> int:
    """What the kernel grants at most without privileges (net.core.rmem_max / wmem_max)."""
    return int(Path("/proc/sys/net/core", name).read_text())


@pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's caps from /proc")
async def test_both_ends_sockets_get_the_intended_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[str, socket.socket]] = []
    for role, module in (("client", flyway_kcp.client), ("server", flyway_kcp.server)):

        def recording(family: int, *, role: str = role, **kwargs: object) -> socket.socket:
            sock = udp_socket(family, **kwargs)  # type: ignore[arg-type]
            made.append((role, sock))
            return sock

        monkeypatch.setattr(module, "udp_socket", recording)
    async with kcp_pair(up=CLEAN, down=CLEAN) as pair:
        local = pair.local("echo")
        reader, writer = await asyncio.open_connection(local.host, local.port)
        writer.write(b"ping")
        async with asyncio.timeout(5):
            assert await reader.readexactly(4) == b"ping"
        writer.close()
        assert sorted(role for role, _ in made) == ["client", "server"]
        for _, sock in made:
            # Linux grants min(asked, cap) and reports twice that (its bookkeeping share):
            # exactly, so a socket left at the default (rmem_default, which stock kernels
            # also cap at) does not pass for one that asked
            for option, cap in ((socket.SO_RCVBUF, "rmem_max"), (socket.SO_SNDBUF, "wmem_max")):
                granted = 2 * min(BUFFER, _kernel_cap(cap))
                assert sock.getsockopt(socket.SOL_SOCKET, option) == granted
