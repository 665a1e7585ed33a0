"""The carrier and its output in memory: the send gate, and the count of what was resent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flyway_kcp.carrier import KcpCarrier
from flyway_kcp.config import KcpConfig
from flyway_kcp.output import DatagramOutput

from flyway_core import CarrierClosed
from flyway_core.protocol.crypto import DatagramKeys


class _Lost:
    """An output whose datagrams go nowhere: nothing is ever acknowledged."""

    address = None

    def __call__(self, segments: bytes) -> int:
        return 0


def _carrier(sndwnd: int) -> KcpCarrier:
    output: Any = _Lost()
    return KcpCarrier(1, KcpConfig(sndwnd=sndwnd, fec=(0, 0)), output, None, on_close=lambda: None)


async def test_a_large_write_goes_into_ikcp_only_as_far_as_the_send_window() -> None:
    carrier = _carrier(sndwnd=64)
    waitsnd = lambda: carrier._conversation.waitsnd  # noqa: E731
    mss = carrier._conversation.mss
    assert carrier.send_nowait(b"x" * mss * 10)  # fits: taken at once
    assert not carrier.send_nowait(b"x" * mss * 64)  # does not fit the room left: refused
    assert waitsnd() == 10
    sending = asyncio.create_task(carrier.send(b"y" * 4_200_000))  # before: 3,250 segments in
    for _ in range(20):
        await asyncio.sleep(0)
        assert waitsnd() <= 64 + 1  # +1: stream mode tops up a half-full last segment
    assert not sending.done()  # the rest waits for acknowledgements
    carrier.shutdown()
    with pytest.raises(CarrierClosed):
        async with asyncio.timeout(1):
            await sending


class _Socket:
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def send(self, datagram: bytes) -> None:
        self.datagrams.append(datagram)


def _push(sn: int, payload: bytes) -> bytes:
    """One ikcp data segment: conv, cmd 81, frg, wnd, ts, sn, una, len (little-endian)."""
    header = (1).to_bytes(4, "little") + bytes([81, 0]) + (128).to_bytes(2, "little")
    header += (0).to_bytes(4, "little") + sn.to_bytes(4, "little") + (0).to_bytes(4, "little")
    return header + len(payload).to_bytes(4, "little") + payload


def test_the_output_counts_every_segment_sent_again_whatever_the_reason() -> None:
    keys = DatagramKeys.derive(bytes(32), bytes(32), b"kcp")
    sock: Any = _Socket()
    output = DatagramOutput(sock, keys.client_sealer(), None)
    for sn in (0, 1, 2):
        output(_push(sn, b"x" * 100))
    assert (output.resent_segments, output.resent_bytes) == (0, 0)
    output(_push(1, b"x" * 100) + _push(3, b"y" * 50))  # a fast resend of 1, then new data
    output(_push(0, b"x" * 100))  # a timeout's resend
    assert (output.resent_segments, output.resent_bytes) == (2, 200)
